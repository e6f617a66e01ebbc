//! The files in deploy/ agree with each other and with the gateway: user ids, file limits, header strips.

use std::path::Path;

use dinggate::proxy::names;
use serde::Deserialize;
use serde_yaml::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The user of the image a Dockerfile builds: the last `USER` of the final stage, as numeric
/// `(uid, gid)`. A name, root, or no `USER` at all is an error: Kubernetes' `runAsNonRoot` can
/// only verify a numeric user (the kubelet refuses "image has non-numeric user").
fn image_user(dockerfile: &str) -> Result<(u32, Option<u32>), String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut user = None;
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if instruction.eq_ignore_ascii_case("FROM") {
            user = None;
        } else if instruction.eq_ignore_ascii_case("USER") {
            user = Some(args.trim().to_owned());
        }
    }
    let user = user.ok_or("the final stage has no USER (the image runs as root)")?;
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user.as_str(), None),
    };
    let uid: u32 = uid
        .parse()
        .map_err(|_| format!("USER {user}: the user is not numeric"))?;
    let gid = gid
        .map(|g| {
            g.parse::<u32>()
                .map_err(|_| format!("USER {user}: the group is not numeric"))
        })
        .transpose()?;
    if uid == 0 {
        return Err(format!("USER {user}: root"));
    }
    Ok((uid, gid))
}

fn int(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// Problems with the user settings of every container of every workload in a manifest, given
/// the image's `(uid, gid)`: each must run as non-root with that numeric user and group.
fn manifest_problems(manifest: &str, image: (u32, Option<u32>)) -> Vec<String> {
    let mut problems = Vec::new();
    let mut workloads = 0;
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let doc = Value::deserialize(doc).expect("manifest is YAML");
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let pod = match kind.as_str() {
            "Pod" => &doc["spec"],
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                &doc["spec"]["template"]["spec"]
            }
            _ => continue,
        };
        workloads += 1;
        let pod_ctx = pod.get("securityContext");
        if let Some(fs_group) = int(pod_ctx.and_then(|c| c.get("fsGroup"))) {
            if let Some(gid) = image.1 {
                if fs_group != u64::from(gid) {
                    problems.push(format!(
                        "{kind}: fsGroup {fs_group} is not the image's group {gid}"
                    ));
                }
            }
        }
        let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
        if containers.is_empty() {
            problems.push(format!("{kind}: no containers"));
        }
        for c in &containers {
            let name = c["name"].as_str().unwrap_or("?");
            // A container's own securityContext overrides the pod's, key by key.
            let setting = |key: &str| {
                c.get("securityContext")
                    .and_then(|s| s.get(key))
                    .or_else(|| pod_ctx.and_then(|s| s.get(key)))
            };
            if setting("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
                problems.push(format!("{kind}/{name}: runAsNonRoot is not true"));
            }
            match int(setting("runAsUser")) {
                Some(u) if u == u64::from(image.0) => {}
                Some(u) => problems.push(format!(
                    "{kind}/{name}: runAsUser {u} is not the image's user {}",
                    image.0
                )),
                None => problems.push(format!(
                    "{kind}/{name}: no numeric runAsUser (the image's is {})",
                    image.0
                )),
            }
            if let (Some(gid), group) = (image.1, int(setting("runAsGroup"))) {
                if group != Some(u64::from(gid)) {
                    problems.push(format!(
                        "{kind}/{name}: runAsGroup {group:?} is not the image's group {gid}"
                    ));
                }
            }
        }
    }
    if workloads == 0 {
        problems.push("no workload in the manifest".to_owned());
    }
    problems
}

#[test]
fn the_image_user_is_numeric_and_the_kubernetes_manifest_runs_it() {
    let image = image_user(&read("deploy/Dockerfile")).unwrap();
    assert_eq!(image, (65532, Some(65532)), "distroless nonroot");
    let problems = manifest_problems(&read("deploy/kubernetes/dinggate.yaml"), image);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checks_catch_a_named_user_and_a_missing_run_as_user() {
    // What deploy/ shipped before: the pod could not start.
    let old = "FROM rust AS build\nUSER builder\nFROM gcr.io/distroless/cc-debian12:nonroot\nUSER nonroot\n";
    assert!(image_user(old).unwrap_err().contains("not numeric"));
    assert!(
        image_user("FROM a\nUSER 1000\nFROM b\n").is_err(),
        "USER of an earlier stage"
    );
    assert!(image_user("FROM a\nUSER 0:0\n").is_err());
    assert_eq!(image_user("FROM a\nUSER \\\n  1000\n"), Ok((1000, None)));
    let pod = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      securityContext: { runAsNonRoot: true }\n      containers: [{ name: app }]\n";
    let problems = manifest_problems(pod, (65532, Some(65532)));
    assert!(
        problems.iter().any(|p| p.contains("no numeric runAsUser")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("runAsGroup")),
        "{problems:?}"
    );
    let other = pod.replace(
        "runAsNonRoot: true",
        "runAsNonRoot: true, runAsUser: 1000, runAsGroup: 65532",
    );
    let problems = manifest_problems(&other, (65532, Some(65532)));
    assert_eq!(problems.len(), 1, "{problems:?}");
    // The container's own setting wins over the pod's.
    let overridden = other.replace(
        "{ name: app }",
        "{ name: app, securityContext: { runAsUser: 65532 } }",
    );
    assert!(manifest_problems(&overridden, (65532, Some(65532))).is_empty());
}

#[test]
fn the_systemd_unit_allows_a_descriptor_per_client_and_upstream_connection() {
    let unit = read("deploy/dinggate.service");
    let limits: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .collect();
    assert_eq!(limits.len(), 1, "one LimitNOFILE= in the unit");
    // `soft:hard` or one number for both; the soft limit is the one the process gets.
    let soft: u64 = limits[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric LimitNOFILE");
    let config: Value = serde_yaml::from_str(&read("gateway.yaml")).unwrap();
    let max_connections = config["server"]["max_connections"]
        .as_u64()
        .expect("gateway.yaml documents server.max_connections");
    assert!(
        soft >= 2 * max_connections + 1024,
        "LimitNOFILE={soft} < 2 x server.max_connections ({max_connections}) + 1024"
    );
}

/// Every spelling of `name` with at least one `-` written as `_` (lower case).
fn underscore_spellings(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split('-').collect();
    let seps = parts.len() - 1;
    (1..1u32 << seps)
        .map(|mask| {
            let mut s = parts[0].to_owned();
            for (i, p) in parts[1..].iter().enumerate() {
                s.push(if mask & (1 << i) != 0 { '_' } else { '-' });
                s.push_str(p);
            }
            s.to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn traefik_strips_every_underscore_spelling_of_every_identity_header_first() {
    let identity = [
        names::X_FORWARDED_USER,
        names::X_FORWARDED_EMAIL,
        names::X_FORWARDED_PREFERRED_USERNAME,
        names::X_DINGTALK_UNIONID,
        names::X_DINGTALK_NAME,
        names::X_DINGTALK_CORPID,
        names::X_DINGTALK_USERID,
        names::X_DINGTALK_DEPARTMENTS,
        names::X_DINGTALK_TITLE,
    ];
    let traefik: Value = serde_yaml::from_str(&read("deploy/traefik.yaml")).unwrap();
    let middlewares = traefik["http"]["middlewares"].as_mapping().unwrap();
    let (strip, removed) = middlewares
        .iter()
        .find_map(|(name, m)| {
            let headers = m["headers"]["customRequestHeaders"].as_mapping()?;
            // Traefik (Go) compares header names case-insensitively; "" removes the header.
            let removed: Vec<String> = headers
                .iter()
                .filter(|(_, v)| v.as_str() == Some(""))
                .map(|(k, _)| k.as_str().unwrap().to_ascii_lowercase())
                .collect();
            Some((name.as_str()?.to_owned(), removed))
        })
        .expect("a headers middleware that removes request headers");
    let mut missing = Vec::new();
    for name in &identity {
        for spelling in underscore_spellings(name.as_str()) {
            if !removed.contains(&spelling) {
                missing.push(spelling);
            }
        }
    }
    assert!(missing.is_empty(), "{strip} does not remove {missing:?}");
    assert_eq!(
        underscore_spellings("x-forwarded-preferred-username").len(),
        7
    );

    let forward_auth = middlewares
        .iter()
        .find(|(_, m)| m.get("forwardAuth").is_some())
        .and_then(|(n, _)| n.as_str())
        .unwrap();
    let app = &traefik["http"]["routers"]["app"]["middlewares"];
    let chain: Vec<&str> = app
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = |n: &str| chain.iter().position(|c| *c == n);
    assert!(
        matches!((at(&strip), at(forward_auth)), (Some(s), Some(f)) if s < f),
        "the app router runs {strip} before {forward_auth}: {chain:?}"
    );
}

#[test]
fn nginx_keeps_dropping_underscore_header_names() {
    let conf = read("deploy/nginx.conf");
    assert!(
        !conf
            .lines()
            .any(|l| l.trim_start().starts_with("underscores_in_headers") && l.contains("on")),
        "deploy/nginx.conf must not pass underscore header names (X_DingTalk_UserId) on"
    );
}
