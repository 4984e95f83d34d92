//! meshkit: being written
