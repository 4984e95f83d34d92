//! Reading samples out of Envoy's `/stats/prometheus` text exposition.

/// The value of the unlabelled sample `metric` (e.g. `mesh_load_shedder_admitted`) in the Prometheus
/// text `exposition`; `None` when there is no such sample or its value is not a number.
pub fn prometheus_sample(exposition: &str, metric: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        let value = rest.strip_prefix("{}").unwrap_or(rest);
        value.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sample_of_exactly_the_named_metric() {
        let text = "# TYPE mesh_load_shedder_admitted counter\n\
                    mesh_load_shedder_admitted_total 9\n\
                    mesh_load_shedder_admitted 4\n\
                    mesh_load_shedder_limit{} 2\n\
                    envoy_cluster_upstream_rq{envoy_cluster_name=\"service\"} 7\n";
        assert_eq!(
            prometheus_sample(text, "mesh_load_shedder_admitted"),
            Some(4.0)
        );
        assert_eq!(
            prometheus_sample(text, "mesh_load_shedder_limit"),
            Some(2.0)
        );
        assert_eq!(prometheus_sample(text, "mesh_load_shedder"), None);
        assert_eq!(prometheus_sample(text, "envoy_cluster_upstream_rq"), None);
    }
}
