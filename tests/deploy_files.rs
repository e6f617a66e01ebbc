//! The files in deploy/ agree with each other and with the gateway: user ids, file limits, header strips.

use std::path::Path;

use dinggate::proxy::names;
use serde::Deserialize;
use yaml_serde::Value;

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
    for doc in yaml_serde::Deserializer::from_str(manifest) {
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
        let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
        // The gateway's image runs as its own user; other images (Redis) as some non-root one.
        let ours = |c: &Value| {
            c["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("dinggate"))
        };
        let gateway_pod = containers.iter().any(ours);
        if let Some(fs_group) = int(pod_ctx.and_then(|c| c.get("fsGroup"))).filter(|_| gateway_pod)
        {
            if let Some(gid) = image.1 {
                if fs_group != u64::from(gid) {
                    problems.push(format!(
                        "{kind}: fsGroup {fs_group} is not the image's group {gid}"
                    ));
                }
            }
        }
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
                Some(0) => problems.push(format!("{kind}/{name}: runAsUser 0 is root")),
                Some(_) if !ours(c) => {}
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
            if let (Some(gid), group, true) = (image.1, int(setting("runAsGroup")), ours(c)) {
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

/// Every manifest of deploy/kubernetes (kustomization.yaml aside), as `(file, text)`.
fn kubernetes_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .map(|n| {
            let path = format!("deploy/kubernetes/{n}");
            let text = read(&path);
            (path, text)
        })
        .collect();
    files.sort();
    assert!(files.len() > 1, "deploy/kubernetes has its manifests");
    files
}

fn yaml_docs(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("manifest is YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

/// Every object of deploy/kubernetes, kustomization.yaml aside.
fn kubernetes_objects() -> Vec<Value> {
    kubernetes_files()
        .iter()
        .flat_map(|(_, text)| yaml_docs(text))
        .collect()
}

/// Where the pod's first container mounts the volume `which` picks.
fn mount_path(pod: &Value, which: impl Fn(&Value) -> bool) -> Option<&str> {
    let volume = pod["volumes"].as_sequence()?.iter().find(|v| which(v))?;
    pod["containers"][0]["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| m["name"] == volume["name"])
        .and_then(|m| m["mountPath"].as_str())
}

/// The gateway's one object of `kind` in deploy/kubernetes, named `dinggate` (panics on none
/// or several).
fn object(objects: &[Value], kind: &str) -> Value {
    named(objects, kind, "dinggate")
}

/// The one object of `kind` named `name` in deploy/kubernetes.
fn named(objects: &[Value], kind: &str, name: &str) -> Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name} in deploy/kubernetes");
    found[0].clone()
}

#[test]
fn the_image_user_is_numeric_and_the_kubernetes_manifests_run_it() {
    let image = image_user(&read("deploy/Dockerfile")).unwrap();
    assert_eq!(image, (65532, Some(65532)), "distroless nonroot");
    let all: String = kubernetes_files()
        .iter()
        .map(|(_, text)| format!("{text}\n---\n"))
        .collect();
    let problems = manifest_problems(&all, image);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The port of an `host:port` listen address.
fn listen_port(listen: &str) -> u64 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{listen}: no port"))
}

/// The container port called `name`.
fn named_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn kubernetes_probes_and_metrics_use_the_admin_listener_of_the_configmap() {
    let objects = kubernetes_objects();
    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let config_map = object(&objects, "ConfigMap");
    let gateway: Value = yaml_serde::from_str(
        config_map["data"]["gateway.yaml"]
            .as_str()
            .expect("the ConfigMap embeds gateway.yaml"),
    )
    .unwrap();

    let admin = named_port(container, "admin");
    let admin_listen = gateway["admin"]["listen"]
        .as_str()
        .expect("gateway.yaml sets admin.listen");
    assert_eq!(
        listen_port(admin_listen),
        admin,
        "admin.listen vs the admin containerPort"
    );
    assert_ne!(admin, named_port(container, "http"));
    let listen = gateway["listen"]
        .as_str()
        .expect("gateway.yaml sets listen");
    assert_eq!(listen_port(listen), named_port(container, "http"));

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == "admin" || get["port"].as_u64() == Some(admin),
            "{probe} is on the admin port: {:?}",
            get["port"]
        );
    }

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"],
        admin.to_string().as_str()
    );

    // Service port `admin` -> container port `admin` <- ServiceMonitor, by the Service's labels.
    let service = object(&objects, "Service");
    let svc_admin = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("the Service has a port named admin");
    assert!(svc_admin["targetPort"] == "admin" || svc_admin["targetPort"].as_u64() == Some(admin));
    let monitor = object(&objects, "ServiceMonitor");
    let endpoints = monitor["spec"]["endpoints"].as_sequence().unwrap();
    assert!(endpoints
        .iter()
        .all(|e| e["port"] == "admin" && e["path"] == "/metrics"));
    let labels = service["metadata"]["labels"].as_mapping().unwrap();
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    assert!(
        !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the ServiceMonitor selects the Service"
    );

    // The NetworkPolicy admits the ports by their names.
    let policy = object(&objects, "NetworkPolicy");
    let ingress_ports: Vec<&Value> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap())
        .map(|p| &p["port"])
        .collect();
    assert!(
        ingress_ports.contains(&&Value::from("http"))
            && ingress_ports.contains(&&Value::from("admin"))
    );
}

#[test]
fn kubernetes_pods_start_and_drain() {
    let objects = kubernetes_objects();
    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    // With service links, the Service `dinggate` gives every later pod DINGGATE_PORT,
    // DINGGATE_SERVICE_HOST, ...: unknown settings, and the gateway refuses to start.
    assert_eq!(pod["enableServiceLinks"], false);

    let gateway: Value = yaml_serde::from_str(
        object(&objects, "ConfigMap")["data"]["gateway.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let defaults: Value = yaml_serde::from_str(&read("gateway.yaml")).unwrap();
    let shutdown = gateway["server"]["shutdown_timeout"]
        .as_str()
        .or(defaults["server"]["shutdown_timeout"].as_str())
        .expect("server.shutdown_timeout");
    let shutdown = humantime::parse_duration(shutdown).unwrap().as_secs();
    let delay = gateway["server"]["shutdown_delay"]
        .as_str()
        .map_or(0, |d| humantime::parse_duration(d).unwrap().as_secs());
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > delay + shutdown,
        "terminationGracePeriodSeconds {grace} must exceed server.shutdown_delay + server.shutdown_timeout ({delay}s + {shutdown}s): SIGKILL would cut the drain"
    );
    // The readiness probe must notice the 503 within the delay.
    let probe = &pod["containers"][0]["readinessProbe"];
    let noticed = probe["periodSeconds"].as_u64().unwrap_or(10)
        * probe["failureThreshold"].as_u64().unwrap_or(3);
    assert!(
        noticed <= delay,
        "the readiness probe needs {noticed}s to see the 503, longer than server.shutdown_delay ({delay}s)"
    );

    // The Secret's keys are the files gateway.yaml reads from the Secret's mount.
    let mount = mount_path(pod, |v| v["secret"]["secretName"] == "dinggate")
        .expect("the Secret dinggate is mounted");
    let mut read_files: Vec<String> = [
        &gateway["dingtalk"]["client_secret_file"],
        &gateway["session"]["signing_key_file"],
    ]
    .iter()
    .map(|f| {
        let f = f.as_str().expect("the secrets are read from files");
        f.strip_prefix(&format!("{mount}/"))
            .unwrap_or_else(|| panic!("{f} is not in the Secret's mount {mount}"))
            .to_owned()
    })
    .collect();
    read_files.sort();
    let secret = object(&objects, "Secret");
    assert_eq!(secret["metadata"]["name"], "dinggate");
    let mut keys: Vec<String> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys, read_files,
        "secret.example.yaml's keys vs gateway.yaml's *_file paths"
    );
}

#[test]
fn kubernetes_configuration_changes_reach_the_pods_and_are_reloaded() {
    let objects = kubernetes_objects();
    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // Only volumes mounted as directories receive ConfigMap and Secret updates; a subPath
    // mount keeps the file the pod started with forever.
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        assert!(
            mount.get("subPath").is_none(),
            "{mount:?}: a subPath mount never sees updates"
        );
    }
    let mount = mount_path(pod, |v| v["configMap"]["name"] == "dinggate")
        .expect("the ConfigMap dinggate is mounted");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| args[i + 1])
        .expect("--config");
    assert_eq!(
        config,
        format!("{mount}/gateway.yaml"),
        "--config reads the mounted ConfigMap"
    );
    let gateway: Value = yaml_serde::from_str(
        object(&objects, "ConfigMap")["data"]["gateway.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let watch = gateway["reload"]["watch_interval"]
        .as_str()
        .expect("reload.watch_interval: nothing sends the pods a SIGHUP");
    assert!(!humantime::parse_duration(watch).unwrap().is_zero());
}

#[test]
fn the_replicas_share_the_redis_the_manifests_run_and_only_they_reach_it() {
    let objects = kubernetes_objects();
    let gateway: Value = yaml_serde::from_str(
        object(&objects, "ConfigMap")["data"]["gateway.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let url = url::Url::parse(gateway["store"]["url"].as_str().expect("store.url")).unwrap();
    let service = named(&objects, "Service", url.host_str().unwrap());
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(
        url.port_or_known_default().map(u64::from).or(Some(6379)),
        Some(port)
    );
    let selector = &service["spec"]["selector"]["app.kubernetes.io/name"];
    let redis = named(&objects, "StatefulSet", "dinggate-redis");
    assert_eq!(
        &redis["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        selector
    );
    let container = &redis["spec"]["template"]["spec"]["containers"][0];
    let container_port = container["ports"][0]["containerPort"].as_u64().unwrap();
    // The gateway may reach it on the pod's port…
    let egress = object(&objects, "NetworkPolicy")["spec"]["egress"].clone();
    let admitted = egress.as_sequence().unwrap().iter().any(|rule| {
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == *selector
            && rule["ports"][0]["port"].as_u64() == Some(container_port)
    });
    assert!(
        admitted,
        "the gateway's NetworkPolicy admits no egress to Redis"
    );
    // …and only the gateway.
    let policy = named(&objects, "NetworkPolicy", "dinggate-redis");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        *selector
    );
    let from = &policy["spec"]["ingress"][0]["from"];
    assert_eq!(from.as_sequence().unwrap().len(), 1);
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "dinggate"
    );
    // Nothing to persist (README): a Redis that restarts empty is refilled by the replicas.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--maxmemory-policy", "noeviction"]),
        "{args:?}"
    );
}

#[test]
fn ingress_nginx_asks_dinggate_and_copies_every_identity_header() {
    let docs = yaml_docs(&read("deploy/ingress-nginx/ingress.yaml"));
    let app = docs
        .iter()
        .find(|d| d["kind"] == "Ingress" && d["metadata"]["annotations"].is_mapping())
        .expect("an Ingress with the auth annotations");
    let annotation = |name: &str| {
        app["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{name}").as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("annotation {name}"))
            .to_owned()
    };
    let auth_url = annotation("auth-url");
    assert!(
        auth_url.starts_with("http://dinggate.")
            && auth_url.ends_with(".svc.cluster.local/_dinggate/auth"),
        "{auth_url}"
    );
    assert!(annotation("auth-signin").contains("/_dinggate/start?rd="));
    let mut copied: Vec<String> = annotation("auth-response-headers")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    copied.sort();
    let mut identity: Vec<String> = identity_headers()
        .iter()
        .map(|h| h.as_str().to_owned())
        .collect();
    identity.sort();
    assert_eq!(copied, identity, "auth-response-headers");
    for snippet in ["configuration-snippet", "auth-snippet", "server-snippet"] {
        assert!(
            app["metadata"]["annotations"]
                .as_mapping()
                .unwrap()
                .keys()
                .all(|k| !k.as_str().unwrap().ends_with(snippet)),
            "no {snippet}: off by default in ingress-nginx"
        );
    }

    // The headers dinggate reads, set on the auth subrequest (a client's copies never count).
    let set_headers = annotation("auth-proxy-set-headers");
    let (_, map_name) = set_headers.split_once('/').expect("<namespace>/<name>");
    let headers = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == map_name)
        .map(|d| &d["data"])
        .expect("the auth-proxy-set-headers ConfigMap");
    assert_eq!(headers["X-Original-URI"], "$request_uri");
    assert!(headers["X-Forwarded-Uri"] == "" || headers["X-Forwarded-Uri"] == "$request_uri");
    assert_eq!(headers["X-Forwarded-Host"], "$host");
    assert_eq!(headers["X-Forwarded-Method"], "$request_method");
    assert_eq!(
        headers["Accept"], "application/json",
        "a 401, never a redirect"
    );

    // dinggate's own paths reach it without the check.
    let own = docs
        .iter()
        .filter(|d| d["kind"] == "Ingress" && !d["metadata"]["annotations"].is_mapping())
        .flat_map(|d| {
            d["spec"]["rules"][0]["http"]["paths"]
                .as_sequence()
                .unwrap()
        })
        .find(|p| p["path"] == "/_dinggate/")
        .expect("an Ingress without auth for /_dinggate/");
    assert_eq!(own["backend"]["service"]["name"], "dinggate");
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
    let pod = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      securityContext: { runAsNonRoot: true }\n      containers: [{ name: app, image: \"dinggate:latest\" }]\n";
    let problems = manifest_problems(pod, (65532, Some(65532)));
    // Another image (Redis) may run as its own user, but never as root.
    let redis = pod
        .replace("dinggate:latest", "redis:7")
        .replace("runAsNonRoot: true", "runAsNonRoot: true, runAsUser: 0");
    assert!(manifest_problems(&redis, (65532, Some(65532)))
        .iter()
        .any(|p| p.contains("runAsUser 0 is root")),);
    assert!(manifest_problems(
        &redis.replace("runAsUser: 0", "runAsUser: 999"),
        (65532, Some(65532))
    )
    .is_empty());
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
        "{ name: app, ",
        "{ name: app, securityContext: { runAsUser: 65532 }, ",
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
    let config: Value = yaml_serde::from_str(&read("gateway.yaml")).unwrap();
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

/// The identity headers dinggate sends by default (gateway.yaml `headers:`).
fn identity_headers() -> [http::HeaderName; 9] {
    [
        names::X_FORWARDED_USER,
        names::X_FORWARDED_EMAIL,
        names::X_FORWARDED_PREFERRED_USERNAME,
        names::X_DINGTALK_UNIONID,
        names::X_DINGTALK_NAME,
        names::X_DINGTALK_CORPID,
        names::X_DINGTALK_USERID,
        names::X_DINGTALK_DEPARTMENTS,
        names::X_DINGTALK_TITLE,
    ]
}

#[test]
fn traefik_strips_every_underscore_spelling_of_every_identity_header_first() {
    let identity = identity_headers();
    let traefik: Value = yaml_serde::from_str(&read("deploy/traefik.yaml")).unwrap();
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

/// A node of Traefik's dynamic configuration (file provider) as far as deploy/traefik.yaml
/// uses it. Field names are Traefik v3's (`pkg/config/dynamic`, documented under "Routing
/// Configuration" → dynamic configuration reference).
#[derive(Clone, Copy)]
enum Schema {
    /// A map with exactly these keys allowed.
    Keys(&'static [(&'static str, Schema)]),
    /// A map of names you choose (routers, services, ...) to one schema.
    Named(&'static Schema),
    /// A list of one schema.
    List(&'static Schema),
    /// A map of header names to string values.
    Headers,
    Str,
    Bool,
    Int,
    /// A key Traefik has whose content deploy/traefik.yaml does not use: not checked further.
    Unused,
}

use Schema::{Bool, Headers, Int, Keys, List, Named, Str, Unused};

const CLIENT_TLS: Schema = Keys(&[
    ("ca", Str),
    ("cert", Str),
    ("key", Str),
    ("insecureSkipVerify", Bool),
    ("caOptional", Bool),
]);
const FORWARD_AUTH: Schema = Keys(&[
    ("address", Str),
    ("tls", CLIENT_TLS),
    ("trustForwardHeader", Bool),
    ("authResponseHeaders", List(&Str)),
    ("authResponseHeadersRegex", Str),
    ("authRequestHeaders", List(&Str)),
    ("addAuthCookiesToResponse", List(&Str)),
    ("maxResponseBodySize", Int),
    ("headerField", Str),
    ("forwardBody", Bool),
    ("maxBodySize", Int),
    ("preserveLocationHeader", Bool),
    ("preserveRequestMethod", Bool),
    ("authSigninURL", Str),
]);
const HEADERS: Schema = Keys(&[
    ("customRequestHeaders", Headers),
    ("customResponseHeaders", Headers),
    ("accessControlAllowCredentials", Bool),
    ("accessControlAllowHeaders", List(&Str)),
    ("accessControlAllowMethods", List(&Str)),
    ("accessControlAllowOriginList", List(&Str)),
    ("accessControlAllowOriginListRegex", List(&Str)),
    ("accessControlExposeHeaders", List(&Str)),
    ("accessControlMaxAge", Int),
    ("addVaryHeader", Bool),
    ("allowedHosts", List(&Str)),
    ("hostsProxyHeaders", List(&Str)),
    ("sslProxyHeaders", Headers),
    ("stsSeconds", Int),
    ("stsIncludeSubdomains", Bool),
    ("stsPreload", Bool),
    ("forceSTSHeader", Bool),
    ("frameDeny", Bool),
    ("customFrameOptionsValue", Str),
    ("contentTypeNosniff", Bool),
    ("browserXssFilter", Bool),
    ("customBrowserXSSValue", Str),
    ("contentSecurityPolicy", Str),
    ("contentSecurityPolicyReportOnly", Str),
    ("publicKey", Str),
    ("referrerPolicy", Str),
    ("permissionsPolicy", Str),
    ("isDevelopment", Bool),
    ("featurePolicy", Str),
    ("sslRedirect", Bool),
    ("sslTemporaryRedirect", Bool),
    ("sslHost", Str),
    ("sslForceHost", Bool),
]);
/// One middleware: exactly one of these kinds (checked apart).
const MIDDLEWARE: Schema = Keys(&[
    ("headers", HEADERS),
    ("forwardAuth", FORWARD_AUTH),
    ("addPrefix", Unused),
    ("stripPrefix", Unused),
    ("stripPrefixRegex", Unused),
    ("replacePath", Unused),
    ("replacePathRegex", Unused),
    ("chain", Unused),
    ("ipAllowList", Unused),
    ("ipWhiteList", Unused),
    ("encodedCharacters", Unused),
    ("errors", Unused),
    ("rateLimit", Unused),
    ("redirectRegex", Unused),
    ("redirectScheme", Unused),
    ("basicAuth", Unused),
    ("digestAuth", Unused),
    ("inFlightReq", Unused),
    ("buffering", Unused),
    ("circuitBreaker", Unused),
    ("compress", Unused),
    ("passTLSClientCert", Unused),
    ("retry", Unused),
    ("contentType", Unused),
    ("grpcWeb", Unused),
    ("plugin", Unused),
]);
const ROUTER: Schema = Keys(&[
    ("entryPoints", List(&Str)),
    ("middlewares", List(&Str)),
    ("service", Str),
    ("rule", Str),
    ("ruleSyntax", Str),
    ("priority", Int),
    (
        "tls",
        Keys(&[
            ("options", Str),
            ("certResolver", Str),
            (
                "domains",
                List(&Keys(&[("main", Str), ("sans", List(&Str))])),
            ),
        ]),
    ),
    ("observability", Unused),
    ("parentRefs", Unused),
]);
const SERVICE: Schema = Keys(&[
    (
        "loadBalancer",
        Keys(&[
            (
                "servers",
                List(&Keys(&[
                    ("url", Str),
                    ("weight", Int),
                    ("preservePath", Bool),
                ])),
            ),
            ("sticky", Unused),
            ("strategy", Str),
            ("healthCheck", Unused),
            ("passiveHealthCheck", Unused),
            ("passHostHeader", Bool),
            ("responseForwarding", Unused),
            ("serversTransport", Str),
        ]),
    ),
    ("weighted", Unused),
    ("mirroring", Unused),
    ("failover", Unused),
    ("highestRandomWeight", Unused),
    ("middlewares", Unused),
]);
const TRAEFIK_DYNAMIC: Schema = Keys(&[
    (
        "http",
        Keys(&[
            ("routers", Named(&ROUTER)),
            ("middlewares", Named(&MIDDLEWARE)),
            ("services", Named(&SERVICE)),
            ("serversTransports", Unused),
            ("models", Unused),
        ]),
    ),
    ("tcp", Unused),
    ("udp", Unused),
    ("tls", Unused),
]);

/// Every place where `value` does not fit `schema`, as `path: problem`.
fn schema_problems(schema: Schema, value: &Value, path: &str, out: &mut Vec<String>) {
    let kind = match value {
        Value::Mapping(_) => "a map",
        Value::Sequence(_) => "a list",
        Value::String(_) => "text",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        _ => "something else",
    };
    match schema {
        Keys(keys) => {
            let Some(map) = value.as_mapping() else {
                return out.push(format!("{path}: expected a map, found {kind}"));
            };
            for (k, v) in map {
                let k = k.as_str().unwrap_or("?");
                match keys.iter().find(|(name, _)| *name == k) {
                    Some((_, s)) => schema_problems(*s, v, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: not in Traefik's schema")),
                }
            }
        }
        Named(s) => match value.as_mapping() {
            Some(map) => {
                for (k, v) in map {
                    schema_problems(*s, v, &format!("{path}.{}", k.as_str().unwrap_or("?")), out);
                }
            }
            None => out.push(format!("{path}: expected a map, found {kind}")),
        },
        List(s) => match value.as_sequence() {
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    schema_problems(*s, v, &format!("{path}[{i}]"), out);
                }
            }
            None => out.push(format!("{path}: expected a list, found {kind}")),
        },
        Headers => match value.as_mapping() {
            Some(map) if map.iter().all(|(k, v)| k.is_string() && v.is_string()) => {}
            _ => out.push(format!("{path}: expected header names with text values")),
        },
        Str if !value.is_string() => out.push(format!("{path}: expected text, found {kind}")),
        Bool if !value.is_bool() => out.push(format!("{path}: expected a boolean, found {kind}")),
        Int if !value.is_u64() => out.push(format!("{path}: expected a number, found {kind}")),
        Str | Bool | Int | Unused => {}
    }
}

/// Schema problems plus references: one kind per middleware, and every router's service and
/// middlewares defined in the file (names with `@provider` live elsewhere).
fn traefik_problems(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    schema_problems(TRAEFIK_DYNAMIC, config, "", &mut out);
    let http = &config["http"];
    for (name, m) in http["middlewares"].as_mapping().into_iter().flatten() {
        let kinds = m.as_mapping().map_or(0, |m| m.len());
        if kinds != 1 {
            out.push(format!(
                ".http.middlewares.{}: {kinds} middleware kinds, Traefik needs exactly one",
                name.as_str().unwrap_or("?")
            ));
        }
    }
    let defined = |section: &str, name: &str| name.contains('@') || !http[section][name].is_null();
    for (name, r) in http["routers"].as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or("?");
        match r["service"].as_str() {
            Some(s) if defined("services", s) => {}
            s => out.push(format!(
                ".http.routers.{name}.service: {s:?} is not defined"
            )),
        }
        for m in r["middlewares"].as_sequence().into_iter().flatten() {
            let m = m.as_str().unwrap_or("?");
            if !defined("middlewares", m) {
                out.push(format!(
                    ".http.routers.{name}.middlewares: {m} is not defined"
                ));
            }
        }
    }
    out
}

#[test]
fn traefik_file_uses_only_traefiks_keys() {
    let traefik: Value = yaml_serde::from_str(&read("deploy/traefik.yaml")).unwrap();
    let problems = traefik_problems(&traefik);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(traefik["http"]["middlewares"]["dinggate"]["forwardAuth"].is_mapping());
}

#[test]
fn the_traefik_schema_check_catches_misspelt_and_misplaced_keys() {
    let good = read("deploy/traefik.yaml");
    for (from, to, wanted) in [
        (
            "trustForwardHeader:",
            "trustForwardHeaders:",
            "forwardAuth.trustForwardHeaders: not in",
        ),
        (
            "authResponseHeaders:",
            "authResponseHeader:",
            "forwardAuth.authResponseHeader: not in",
        ),
        (
            "loadBalancer: { servers",
            "loadbalancer: { servers",
            "loadbalancer: not in",
        ),
        (
            "customRequestHeaders:",
            "customRequestHeader:",
            "headers.customRequestHeader: not in",
        ),
        (
            "service: app",
            "service: ap",
            "routers.app.service: Some(\"ap\") is not defined",
        ),
        (
            "[dinggate-strip, dinggate]",
            "[dinggate-strip, dinggate, nope]",
            "nope is not defined",
        ),
        (
            "trustForwardHeader: false",
            "trustForwardHeader: \"no\"",
            "expected a boolean",
        ),
        (
            "rule: \"Host(`app.example.com`)\"",
            "rules: \"Host(`app.example.com`)\"",
            "routers.app.rules: not in",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let bad: Value = yaml_serde::from_str(&good.replacen(from, to, 1)).unwrap();
        let problems = traefik_problems(&bad);
        assert!(
            problems.iter().any(|p| p.contains(wanted)),
            "{from} -> {to}: {problems:#?}"
        );
    }
    let url = good.replace("servers: [{ url:", "servers: [{ address:");
    let problems = traefik_problems(&yaml_serde::from_str(&url).unwrap());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("servers[0].address: not in")),
        "{problems:?}"
    );
}

/// The unit's credentials and the settings that read them agree: every `%d/NAME` an
/// `Environment=` line points a `DINGGATE_*_FILE` setting at is a `LoadCredential=NAME:`, and
/// the setting is one gateway.yaml documents; systemd waits longer than the drain before it kills.
#[test]
fn the_systemd_units_credentials_and_stop_timeout_fit_the_configuration() {
    let unit = read("deploy/dinggate.service");
    let active: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let credentials: Vec<&str> = active
        .iter()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .map(|c| c.split(':').next().unwrap())
        .collect();
    let documented = read("gateway.yaml");
    let mut pointed = 0;
    for env in active.iter().filter_map(|l| l.strip_prefix("Environment=")) {
        let (var, value) = env.split_once('=').unwrap();
        let Some(name) = value.strip_prefix("%d/") else {
            continue;
        };
        pointed += 1;
        assert!(
            credentials.contains(&name),
            "{var} reads credential {name}, which no LoadCredential= provides"
        );
        // DINGGATE_DINGTALK__CLIENT_SECRET_FILE -> section dingtalk, key client_secret_file.
        let path = var.strip_prefix("DINGGATE_").unwrap().to_ascii_lowercase();
        let (section, key) = path.split_once("__").unwrap();
        assert!(key.ends_with("_file"), "{var} is not a *_file setting");
        assert!(
            documented.contains(&format!("\n{section}:"))
                && documented.contains(&format!("  {key}:")),
            "{var}: gateway.yaml documents no {section}.{key}"
        );
    }
    assert_eq!(pointed, credentials.len(), "every credential is used");

    // `systemctl reload`: the file is checked (a broken one fails the command), then SIGHUP.
    let reload: Vec<&str> = active
        .iter()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .collect();
    let start = active
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let config = start.split_once("--config ").expect("--config").1;
    assert_eq!(
        reload,
        vec![
            format!("/usr/local/bin/dinggate check --config {config}").as_str(),
            "/bin/kill -HUP $MAINPID"
        ]
    );

    let stop: u64 = active
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec=")
        .parse()
        .unwrap();
    let config: Value = yaml_serde::from_str(&documented).unwrap();
    let secs = |key: &str| {
        humantime::parse_duration(config["server"][key].as_str().unwrap())
            .unwrap()
            .as_secs()
    };
    assert!(
        stop > secs("shutdown_delay") + secs("shutdown_timeout"),
        "TimeoutStopSec={stop} must exceed server.shutdown_delay + server.shutdown_timeout"
    );
}
