//! The control API over raw HTTP (curl) against a real lbd: what the CLI does not exercise —
//! the fully populated load balancer create, paging/fields/filters, token validation, error
//! formats of each service.

use std::process::Command;

use lb_tests::api::Api;
use lb_tests::lbd::Lbd;
use lb_tests::{echo_backend, free_port};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fully_populated_create_serves_and_reports_a_status_tree() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("populated").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let secret_ref = api.pkcs12_secret(&work, "full.example", "full");
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {
            "name": "full", "vip_address": "127.0.0.1",
            "listeners": [{"name": "l", "protocol": "TERMINATED_HTTPS", "protocol_port": port,
                           "default_tls_container_ref": secret_ref,
                           "default_pool": {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                                            "members": [{"address": "127.0.0.1", "protocol_port": backend.port(), "weight": 3}],
                                            "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}}}]
        }}));
        assert_eq!(code, 201, "{lb}");
        let id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        assert_eq!(lb["loadbalancer"]["provisioning_status"], "PENDING_CREATE");
        api.wait_active(&id);
        let (_, status) = api.get(&format!("/v2.0/lbaas/loadbalancers/{id}/status"));
        let listener = &status["statuses"]["loadbalancer"]["listeners"][0];
        assert_eq!(listener["operating_status"], "ONLINE", "{status}");
        assert_eq!(listener["pools"][0]["members"][0]["protocol_port"], backend.port(), "{status}");
        assert_eq!(listener["pools"][0]["health_monitor"]["type"], "HTTP", "{status}");
        let out = Command::new("curl")
            .args(["-sk", "--resolve", &format!("full.example:{port}:127.0.0.1"), &format!("https://full.example:{port}/")])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("backend=populated"));

        // A write while the load balancer is pending is refused as Octavia does.
        let (code, _) = api.call("PUT", &format!("/v2.0/lbaas/loadbalancers/{id}"), Some(json!({"loadbalancer": {"name": "renamed"}})), None);
        assert_eq!(code, 200);
        let (code, body) = api.call("PUT", &format!("/v2.0/lbaas/loadbalancers/{id}"), Some(json!({"loadbalancer": {"name": "again"}})), None);
        if code == 409 {
            assert!(body["faultstring"].as_str().unwrap().contains("immutable"), "{body}");
        } else {
            assert_eq!(code, 200, "the controller may already have finished: {body}");
        }
    })
    .await
    .unwrap();
}

/// `openstack loadbalancer failover` rebuilds the load balancer's TLS contexts: a TLS 1.2
/// session resumes before it and not after (new session-ticket keys and cache), while the
/// listener keeps serving; an unknown load balancer is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_rebuilds_the_load_balancers_tls_state() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("failover").await;
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let secret_ref = api.pkcs12_secret(&work, "fo.example", "fo");
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "fo", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "TERMINATED_HTTPS", "protocol_port": port, "default_tls_container_ref": secret_ref,
                           "default_pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [{"address": "127.0.0.1", "protocol_port": backend.port()}]}}]}}));
        assert_eq!(code, 201, "{lb}");
        let id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&id);
        let sess = work.join("sess.pem");
        let s_client = |session: &str| -> String {
            let out = Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "fo.example", "-tls1_2", session])
                .arg(&sess)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        assert!(s_client("-sess_out").contains("New, TLSv1.2"));
        assert!(s_client("-sess_in").contains("Reused, TLSv1.2"), "resumption works before the failover");
        lbd.os(&["loadbalancer", "failover", &id]);
        api.wait_active(&id);
        assert!(s_client("-sess_in").contains("New, TLSv1.2"), "the failover gave the listener new session keys");
        assert!(lbd.log().contains("failover: rebuilding TLS contexts and member pools"));
        let out = Command::new("curl").args(["-sk", &format!("https://127.0.0.1:{port}/")]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("backend=failover"));
        let (code, body) = api.put("/v2.0/lbaas/loadbalancers/00000000-0000-0000-0000-000000000000/failover", json!({}));
        assert_eq!(code, 404, "{body}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_select_fields_and_page_and_errors_use_each_services_format() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let (code, body) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": name, "vip_address": format!("127.0.0.{}", i + 10), "connection_limit": 1}}));
            assert_eq!(code, 400, "unknown attributes are refused: {body}");
            assert!(body["faultstring"].as_str().unwrap().contains("connection_limit"), "{body}");
            let (code, body) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": name, "vip_address": format!("127.0.0.{}", i + 10)}}));
            assert_eq!(code, 201, "{body}");
        }
        let (_, page1) = api.get("/v2.0/lbaas/loadbalancers?limit=2&fields=id&fields=name");
        let items = page1["loadbalancers"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_object().unwrap().len(), 2, "only id and name: {page1}");
        let next = page1["loadbalancers_links"][0]["href"].as_str().unwrap();
        assert_eq!(page1["loadbalancers_links"][0]["rel"], "next");
        let (_, page2) = api.get(next.trim_start_matches(&api.url));
        assert_eq!(page2["loadbalancers"].as_array().unwrap().len(), 1, "{page2}");
        assert_eq!(page2["loadbalancers"][0]["name"], "c");
        let (_, filtered) = api.get("/v2.0/lbaas/loadbalancers?name=b&admin_state_up=true");
        assert_eq!(filtered["loadbalancers"].as_array().unwrap().len(), 1);
        assert_eq!(filtered["loadbalancers"][0]["vip_address"], "127.0.0.11");
        assert_eq!(api.get("/v2.0/lbaas/loadbalancers/00000000-0000-4000-8000-000000000000").0, 404);
        assert_eq!(api.get("/v2/lbaas/loadbalancers?name=a").1["loadbalancers"].as_array().unwrap().len(), 1, "/v2 alias");

        // Token validation, and 401s in each service's shape.
        let (code, tok) = api.call("GET", "/v3/auth/tokens", None, None);
        assert_eq!(code, 400, "X-Subject-Token is required: {tok}");
        let mut cmd = Command::new("curl");
        let out = cmd
            .args(["-s", "-H", &format!("x-auth-token: {}", api.token), "-H", &format!("x-subject-token: {}", api.token)])
            .arg(format!("{}/v3/auth/tokens", api.url))
            .output()
            .unwrap();
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["token"]["project"]["name"], "admin");
        assert!(body["token"]["catalog"].as_array().unwrap().iter().any(|e| e["type"] == "load-balancer"));
        let (code, body) = api.call("GET", "/v2.0/lbaas/loadbalancers", None, Some("bogus"));
        assert_eq!((code, body["faultstring"].is_string()), (401, true), "{body}");
        let (code, body) = api.call("GET", "/v1/secrets", None, Some("bogus"));
        assert_eq!((code, body["code"].as_u64()), (401, Some(401)), "{body}");
        let (code, body) = api.post("/v3/auth/tokens", json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": "wrong"}}}}}));
        assert_eq!((code, body["error"]["code"].as_u64()), (401, Some(401)), "{body}");

        // Barbican discovery as the CLI needs it.
        let (code, root) = api.call("GET", "/", None, Some(""));
        assert_eq!(code, 300);
        assert!(root["versions"]["values"][0]["links"][0]["href"].as_str().unwrap().ends_with("/v1/"));
        let (code, v1) = api.get("/v1/");
        assert_eq!((code, v1["version"]["max_version"].as_str()), (200, Some("1.1")));
        let (code, doc) = api.call("GET", "/openapi.json", None, Some(""));
        assert_eq!(code, 200);
        assert!(doc["paths"]["/v2.0/lbaas/listeners"].is_object());
    })
    .await
    .unwrap();
}

/// `--worker-threads` sizes the runtime (shown in `/metrics`); a count out of range stops lbd
/// at start with a message naming the option.
#[test]
fn worker_threads_option_sizes_the_runtime_and_rejects_zero() {
    let dir = tempfile::tempdir().unwrap();
    let lbd = Lbd::start_with(dir.path(), "127.0.0.1".parse().unwrap(), &["--worker-threads", "3"]);
    let out = Command::new("curl").args(["-s", &format!("{}/metrics", lbd.url())]).output().unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.lines().any(|l| l == "lb_worker_threads 3"), "{metrics}");

    let out = Command::new(lb_tests::lbd::lbd_binary())
        .args(["serve", "--worker-threads", "0", "--api-listen", &format!("127.0.0.1:{}", free_port())])
        .env("LBD_STATE_DIR", dir.path().join("other"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--worker-threads") && err.contains("0 is not in 1..=1024"), "{err}");
    assert!(!dir.path().join("other").exists(), "a rejected start created state");
}

/// Client connections are spread over the data-plane workers (`lb_worker_connections`): a new
/// one stays on the accepting worker unless the other has fewer open, so they alternate; the
/// requests of connections on either worker reach the member, and closed connections leave
/// the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_worker_threads() {
    use http_body_util::BodyExt;
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend("spread").await;
    let work = dir.path().to_path_buf();
    let (lbd, port) = tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start_with(&work, "127.0.0.1".parse().unwrap(), &["--worker-threads", "2"]);
        let api = Api::login(&lbd);
        let secret_ref = api.pkcs12_secret(&work, "spread.example", "spread");
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {
            "name": "spread", "vip_address": "127.0.0.1",
            "listeners": [{"name": "l", "protocol": "TERMINATED_HTTPS", "protocol_port": port, "default_tls_container_ref": secret_ref,
                           "default_pool": {"name": "p", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                                            "members": [{"address": "127.0.0.1", "protocol_port": backend.port()}]}}]
        }}));
        assert_eq!(code, 201, "{lb}");
        api.wait_active(lb["loadbalancer"]["id"].as_str().unwrap());
        (lbd, port)
    })
    .await
    .unwrap();
    let metrics = || {
        let out = Command::new("curl").args(["-s", &format!("{}/metrics", lbd.url())]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        [0, 1].map(|w| lb_tests::metric(&text, &format!("lb_worker_connections{{worker=\"{w}\"}}")))
    };
    let mut senders = Vec::new();
    for i in 0..6 {
        let tls = lb_tests::client::connect(port, "spread.example", lb_tests::client::default_config()).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        senders.push(sender);
        // Each connection is counted once its task runs; the next goes to the other worker.
        let want = [(i / 2 + 1) as f64, ((i + 1) / 2) as f64];
        let mut seen = metrics();
        for _ in 0..50 {
            if seen.iter().sum::<f64>() == (i + 1) as f64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            seen = metrics();
        }
        let mut sorted = seen;
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(sorted, want, "connection {i}: per-worker open connections {seen:?}");
    }
    for (i, sender) in senders.iter_mut().enumerate() {
        for _ in 0..3 {
            sender.ready().await.unwrap();
            let req = hyper::Request::get(format!("/c{i}")).header("host", "spread.example").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(&format!("backend=spread\npath=/c{i}\n")), "{body:?}");
        }
    }
    drop(senders);
    for _ in 0..100 {
        if metrics() == [0.0, 0.0] {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("closed connections still counted: {:?}", metrics());
}

/// Octavia's batch member update (`PUT /pools/{id}/members`, what Kubernetes' cloud provider and
/// Terraform use): matched members are updated in place, new ones created, missing ones deleted
/// unless `additive_only`; traffic follows; a bad entry changes nothing and names its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_member_update_replaces_a_pools_members_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (echo_backend("a").await, echo_backend("b").await, echo_backend("c").await);
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let port = free_port();
        let member = |addr: std::net::SocketAddr| json!({"address": addr.ip().to_string(), "protocol_port": addr.port()});
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "batch", "vip_address": "127.0.0.1",
            "listeners": [{"protocol": "HTTP", "protocol_port": port,
                           "default_pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [member(a), member(b)]}}]}}));
        assert_eq!(code, 201, "{lb}");
        let id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&id);
        let pool = api.get("/v2.0/lbaas/pools").1["pools"][0]["id"].as_str().unwrap().to_string();
        let path = format!("/v2.0/lbaas/pools/{pool}/members");
        let members = || {
            let mut m: Vec<(u16, i64, String, String)> = api.get(&path).1["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["protocol_port"].as_u64().unwrap() as u16, m["weight"].as_i64().unwrap(), m["name"].as_str().unwrap().to_string(), m["id"].as_str().unwrap().to_string()))
                .collect();
            m.sort();
            m
        };
        let served = || -> std::collections::BTreeSet<String> {
            (0..24)
                .map(|_| {
                    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/")]).output().unwrap();
                    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
                })
                .collect()
        };
        assert_eq!(served(), ["backend=a", "backend=b"].map(String::from).into());
        let b_id = members().into_iter().find(|m| m.0 == b.port()).unwrap().3;

        // b is kept (same id) and updated, c is created, a is deleted.
        let mut b2 = member(b);
        b2["weight"] = json!(2);
        b2["name"] = json!("b2");
        let (code, body) = api.put(&path, json!({"members": [b2, member(c)]}));
        assert_eq!(code, 202, "{body}");
        let now = members();
        assert_eq!(now.len(), 2, "{now:?}");
        assert!(now.iter().any(|m| *m == (b.port(), 2, "b2".to_string(), b_id.clone())), "{now:?}");
        assert!(now.iter().any(|m| m.0 == c.port() && m.1 == 1), "{now:?}");
        api.wait_active(&id);
        assert_eq!(served(), ["backend=b", "backend=c"].map(String::from).into());
        let (_, m) = api.get(&format!("{path}/{b_id}"));
        assert_eq!(m["member"]["provisioning_status"], "ACTIVE", "{m}");

        // additive_only keeps the members the list leaves out.
        let (code, body) = api.put(&format!("{path}?additive_only=true"), json!({"members": [member(a)]}));
        assert_eq!(code, 202, "{body}");
        api.wait_active(&id);
        let before = members();
        assert_eq!(before.len(), 3, "{before:?}");
        assert_eq!(served(), ["backend=a", "backend=b", "backend=c"].map(String::from).into());

        // Bad input: a precise 400 (or 404), nothing changed, the load balancer not left pending.
        let mut bad_weight = member(c);
        bad_weight["weight"] = json!(1000);
        for (query, body, status, says) in [
            ("", json!({"members": [member(a), member(a)]}), 400, "members[1]: address 127.0.0.1 with protocol_port"),
            ("", json!({"members": [member(a), {"address": "not-an-ip", "protocol_port": 80}]}), 400, "members[1]: Invalid input for field/attribute address"),
            ("", json!({"members": [bad_weight]}), 400, "members[0]: Invalid input for field/attribute weight"),
            ("", json!({"members": [{"address": "127.0.0.1", "protocol_port": 80, "colour": "red"}]}), 400, "colour"),
            ("", json!({"member": []}), 400, "members"),
            ("?additive_only=maybe", json!({"members": []}), 400, "additive_only"),
        ] {
            let (code, answer) = api.put(&format!("{path}{query}"), body.clone());
            assert_eq!(code, status, "{body} -> {answer}");
            assert!(answer["faultstring"].as_str().unwrap().contains(says), "{body} -> {answer}");
            assert_eq!(members(), before, "{body} changed the members");
            assert_eq!(api.get(&format!("/v2.0/lbaas/loadbalancers/{id}")).1["loadbalancer"]["provisioning_status"], "ACTIVE");
        }
        let (code, _) = api.put("/v2.0/lbaas/pools/00000000-0000-4000-8000-000000000000/members", json!({"members": []}));
        assert_eq!(code, 404);
        // A cascade delete with a value that is no boolean deletes nothing.
        let (code, answer) = api.delete(&format!("/v2.0/lbaas/loadbalancers/{id}?cascade=maybe"));
        assert_eq!(code, 400, "{answer}");
        assert!(answer["faultstring"].as_str().unwrap().contains("cascade"), "{answer}");
        assert_eq!(members(), before);

        // A member quota of 3 (the pool has 3): a batch that would add a fourth is refused
        // whole with Octavia's 403; updating the three in place is not an addition.
        let project = lb["loadbalancer"]["project_id"].as_str().unwrap().to_string();
        let (code, q) = api.put(&format!("/v2.0/lbaas/quotas/{project}"), json!({"quota": {"member": 3}}));
        assert_eq!((code, q["quota"]["member"].as_i64()), (200, Some(3)), "{q}");
        let spare = free_port();
        let (code, body) = api.put(&format!("{path}?additive_only=true"), json!({"members": [{"address": "127.0.0.1", "protocol_port": spare}]}));
        assert_eq!(code, 403, "{body}");
        assert!(body["faultstring"].as_str().unwrap().contains("Quota has been met for resources: member"), "{body}");
        assert_eq!(members(), before);
        let (code, body) = api.put(&path, json!({"members": [member(a), member(b), member(c)]}));
        assert_eq!(code, 202, "{body}");
        api.wait_active(&id);
        let (code, _) = api.delete(&format!("/v2.0/lbaas/quotas/{project}"));
        assert_eq!(code, 204);
        assert_eq!(api.get(&format!("/v2.0/lbaas/quotas/{project}")).1["quota"]["member"], -1);

        // An empty list empties the pool.
        let (code, _) = api.put(&path, json!({"members": []}));
        assert_eq!(code, 202);
        assert!(members().is_empty());
        api.wait_active(&id);
    })
    .await
    .unwrap();
}

/// L7 policies decide per request, first match by position: reject, redirect to a URL or a
/// prefix, or another pool; every rule of a policy must match (invert negates one); disabled
/// policies are skipped; a bad regular expression is refused at the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_policies_reject_redirect_and_route_to_other_pools() {
    let dir = tempfile::tempdir().unwrap();
    let (main, canary) = (echo_backend("main").await, echo_backend("canary").await);
    let work = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let lbd = Lbd::start(&work);
        let api = Api::login(&lbd);
        let port = free_port();
        let (code, lb) = api.post("/v2.0/lbaas/loadbalancers", json!({"loadbalancer": {"name": "l7", "vip_address": "127.0.0.1",
            "listeners": [{"name": "web", "protocol": "HTTP", "protocol_port": port,
                           "default_pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "members": [{"address": "127.0.0.1", "protocol_port": main.port()}]}}]}}));
        assert_eq!(code, 201, "{lb}");
        let id = lb["loadbalancer"]["id"].as_str().unwrap().to_string();
        api.wait_active(&id);
        let listener = lb["loadbalancer"]["listeners"][0]["id"].as_str().unwrap().to_string();
        let (code, pool) = api.post("/v2.0/lbaas/pools", json!({"pool": {"name": "canary", "loadbalancer_id": id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "members": [{"address": "127.0.0.1", "protocol_port": canary.port()}]}}));
        assert_eq!(code, 201, "{pool}");
        let canary_pool = pool["pool"]["id"].as_str().unwrap().to_string();
        api.wait_active(&id);
        let rule = |kind: &str, compare: &str, key: Option<&str>, value: &str, invert: bool| json!({"type": kind, "compare_type": compare, "key": key, "value": value, "invert": invert});
        let policies = [
            json!({"action": "REJECT", "position": 1, "rules": [rule("PATH", "STARTS_WITH", None, "/admin", false)]}),
            json!({"action": "REDIRECT_TO_URL", "position": 2, "redirect_url": "https://new.example/moved", "redirect_http_code": 301,
                   "rules": [rule("HOST_NAME", "EQUAL_TO", None, "old.example", false)]}),
            json!({"action": "REDIRECT_PREFIX", "position": 3, "redirect_prefix": "https://cdn.example", "rules": [rule("FILE_TYPE", "REGEX", None, "^(png|jpg)$", false)]}),
            json!({"action": "REDIRECT_TO_POOL", "position": 4, "redirect_pool_id": canary_pool,
                   "rules": [rule("HEADER", "EQUAL_TO", Some("X-Canary"), "yes", false), rule("COOKIE", "EQUAL_TO", Some("optout"), "1", true)]}),
        ];
        for mut p in policies {
            p["listener_id"] = json!(listener);
            let (code, body) = api.post("/v2.0/lbaas/l7policies", json!({"l7policy": p}));
            assert_eq!(code, 201, "{body}");
            api.wait_active(&id);
        }
        let curl = |path: &str, headers: &[&str]| -> String {
            let mut cmd = Command::new("curl");
            cmd.args(["-s", "-w", "\n%{http_code} %{redirect_url}"]);
            for h in headers {
                cmd.args(["-H", h]);
            }
            let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let (body, status) = text.rsplit_once('\n').unwrap();
            format!("{status} {}", body.lines().next().unwrap_or_default())
        };
        assert_eq!(curl("/admin/users", &[]), "403  403 Forbidden");
        assert_eq!(curl("/", &["Host: old.example"]), "301 https://new.example/moved 301 Moved Permanently");
        assert_eq!(curl("/img/a.png?v=2", &[]), "302 https://cdn.example/img/a.png?v=2 302 Found");
        assert_eq!(curl("/app", &["X-Canary: yes"]), "200  backend=canary");
        assert_eq!(curl("/app", &["X-Canary: yes", "Cookie: a=b; optout=1"]), "200  backend=main", "the inverted rule fails, so the policy does not match");
        assert_eq!(curl("/app", &[]), "200  backend=main");
        assert_eq!(curl("/admin", &["X-Canary: yes"]), "403  403 Forbidden", "position 1 wins");

        // Disabling the REJECT policy lets /admin through to the default pool.
        let (_, list) = api.get(&format!("/v2.0/lbaas/l7policies?listener_id={listener}&action=REJECT"));
        let reject = list["l7policies"][0]["id"].as_str().unwrap().to_string();
        let (code, body) = api.put(&format!("/v2.0/lbaas/l7policies/{reject}"), json!({"l7policy": {"admin_state_up": false}}));
        assert_eq!(code, 200, "{body}");
        api.wait_active(&id);
        assert_eq!(curl("/admin/users", &[]), "200  backend=main");
        let (_, shown) = api.get(&format!("/v2.0/lbaas/l7policies/{reject}"));
        assert_eq!(shown["l7policy"]["operating_status"], "OFFLINE", "{shown}");

        // A regular expression the data plane could not compile is refused, naming the value.
        let (code, body) = api.post(&format!("/v2.0/lbaas/l7policies/{reject}/rules"), json!({"rule": rule("PATH", "REGEX", None, "/(a|b", false)}));
        assert_eq!(code, 400, "{body}");
        assert!(body["faultstring"].as_str().unwrap().contains("Not a valid regular expression"), "{body}");
    })
    .await
    .unwrap();
}
