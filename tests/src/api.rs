//! The control API driven over raw HTTP with curl (a real client, and fast enough for the
//! guest, where the Python CLI would take minutes per command).

use std::process::Command;

use serde_json::{Value, json};

use crate::lbd::Lbd;

/// The control API through curl, as the admin.
pub struct Api {
    pub url: String,
    pub token: String,
}

impl Api {
    /// A self-signed certificate for `cn` (30 days) and its key in a PKCS12 file without a
    /// passphrase, stored as the Barbican secret `name`; its `secret_ref`.
    pub fn pkcs12_secret(&self, dir: &std::path::Path, cn: &str, name: &str) -> String {
        use base64::Engine;
        let (cert, key) = crate::self_signed(dir, cn, "30");
        let p12 = crate::pkcs12(dir, &cert, &key, "", false);
        let (code, secret) = self.post("/v1/secrets/", json!({"name": name, "payload": base64::engine::general_purpose::STANDARD.encode(p12),
            "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}));
        assert_eq!(code, 201, "{secret}");
        secret["secret_ref"].as_str().unwrap().to_string()
    }

    pub fn login(lbd: &Lbd) -> Api {
        let password = lbd.env.iter().find(|(k, _)| k == "OS_PASSWORD").unwrap().1.clone();
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": password}}},
                           "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-X", "POST", "-H", "content-type: application/json", "-d", &body.to_string()])
            .arg(format!("{}/v3/auth/tokens", lbd.url()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with("HTTP/1.1 201"), "{text}");
        let token = text.lines().find_map(|l| l.strip_prefix("x-subject-token: ")).unwrap().trim().to_string();
        Api { url: lbd.url(), token }
    }

    /// `(status, JSON body)`.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H", "content-type: application/json"]);
        if let Some(t) = token.or(Some(self.token.as_str())).filter(|t| !t.is_empty()) {
            cmd.args(["-H", &format!("x-auth-token: {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-d", &b.to_string()]);
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body), None)
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body), None)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None, None)
    }

    /// Polls until the load balancer is ACTIVE again (the controller runs asynchronously).
    pub fn wait_active(&self, lb: &str) {
        // Generous: the guest runs under emulation.
        for _ in 0..600 {
            if self.get(&format!("/v2.0/lbaas/loadbalancers/{lb}")).1["loadbalancer"]["provisioning_status"] == "ACTIVE" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("load balancer {lb} never became ACTIVE");
    }
}
