//! What a caller's cgroup path says about it: the systemd unit, container
//! and Kubernetes pod it runs in, read from the path shapes systemd, Docker,
//! containerd, CRI-O and the kubelet write (docs/yaml-reference.md). What
//! `trellis:WorkloadUnit`, `trellis:WorkloadContainer` and
//! `trellis:WorkloadPod` conditions read.

/// The deepest systemd unit (`NAME.service`, `.scope`, `.slice`) on the path.
pub fn unit(path: &str) -> Option<&str> {
    path.rsplit('/').find(|s| {
        [".service", ".scope", ".slice"]
            .iter()
            .any(|suffix| s.len() > suffix.len() && s.ends_with(suffix))
    })
}

/// The container id: `docker-ID.scope`, `cri-containerd-ID.scope`,
/// `crio-ID.scope` (systemd driver), or `/docker/ID` and the kubelet's
/// `/podUID/ID` (cgroupfs driver).
pub fn container(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, s) in segments.iter().enumerate().rev() {
        for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
            if let Some(id) = s
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(".scope"))
            {
                return Some(id).filter(|id| is_id(id));
            }
        }
        let parent = i.checked_sub(1).map(|p| segments[p]);
        if parent.is_some_and(|p| p == "docker" || p.starts_with("pod")) && is_id(s) {
            return Some(s);
        }
    }
    None
}

/// The pod's UID: `kubepods-QOS-podUID.slice` (systemd driver, with `_`
/// for `-`) or `/podUID/` (cgroupfs driver).
pub fn pod(path: &str) -> Option<String> {
    path.split('/').find_map(|s| {
        let uid = match s.strip_suffix(".slice") {
            Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
            None => s.strip_prefix("pod")?.to_string(),
        };
        (uid.len() >= 8 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
    })
}

fn is_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_containers_and_pods_from_each_layout() {
        let id = "4f0c5b7e2a1d9c8b7a6f5e4d3c2b1a09";
        let uid = "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718";
        let systemd_pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs_pod = format!("/kubepods/besteffort/pod{uid}/{id}");
        // (path, unit, container, pod)
        type Row<'a> = (String, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let table: Vec<Row> = vec![
            (
                "/system.slice/nginx.service".into(),
                Some("nginx.service"),
                None,
                None,
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope".into(),
                Some("run-1.scope"),
                None,
                None,
            ),
            (
                format!("/system.slice/docker-{id}.scope"),
                Some("docker-4f0c5b7e2a1d9c8b7a6f5e4d3c2b1a09.scope"),
                Some(id),
                None,
            ),
            (format!("/docker/{id}"), None, Some(id), None),
            (
                systemd_pod.clone(),
                Some("cri-containerd-4f0c5b7e2a1d9c8b7a6f5e4d3c2b1a09.scope"),
                Some(id),
                Some(uid),
            ),
            (cgroupfs_pod, None, Some(id), Some(uid)),
            ("/".into(), None, None, None),
        ];
        for (path, u, c, p) in table {
            assert_eq!(unit(&path), u, "unit of {path}");
            assert_eq!(container(&path), c, "container of {path}");
            assert_eq!(pod(&path).as_deref(), p, "pod of {path}");
        }
    }
}
