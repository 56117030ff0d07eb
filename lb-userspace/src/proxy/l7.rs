//! L7 policies at request time: the listener's policies, compiled once per reconcile (regular
//! expressions built, redirect pools resolved), tried in `position` order against each HTTP
//! request; the first policy whose rules all match decides (reject, redirect, or another pool).

use std::sync::Arc;

use http::StatusCode;
use http::request::Parts;
use regex::Regex;

use super::upstream::PoolRuntime;
use crate::tls::peer::ClientCert;
use lb_common::model::{L7Action, L7Compare, L7Policy, L7Rule, L7RuleKind};

/// What a matching policy does with the request.
pub enum Action {
    /// 403.
    Reject,
    /// Forwarded to this pool's members instead of the default pool's.
    Pool(Arc<PoolRuntime>),
    /// Answered with `code` and `Location: location` (followed by the request's path and query
    /// when `prefix`).
    Redirect { location: String, code: StatusCode, prefix: bool },
}

enum Matcher {
    Regex(Regex),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    EqualTo(String),
}

impl Matcher {
    fn matches(&self, actual: &str) -> bool {
        match self {
            Matcher::Regex(r) => r.is_match(actual),
            Matcher::StartsWith(v) => actual.starts_with(v.as_str()),
            Matcher::EndsWith(v) => actual.ends_with(v.as_str()),
            Matcher::Contains(v) => actual.contains(v.as_str()),
            Matcher::EqualTo(v) => actual == v,
        }
    }
}

struct Rule {
    kind: L7RuleKind,
    key: Option<String>,
    matcher: Matcher,
    invert: bool,
}

struct Policy {
    action: Action,
    rules: Vec<Rule>,
}

/// A listener's compiled L7 policies (none for most listeners: then requests skip all this).
#[derive(Default)]
pub struct L7Runtime {
    policies: Vec<Policy>,
}

/// Host names compare without case (and without the port), as DNS names do.
fn case_insensitive(kind: L7RuleKind) -> bool {
    matches!(kind, L7RuleKind::HostName | L7RuleKind::SslConnHasCert)
}

fn compile(rule: &L7Rule) -> Result<Rule, String> {
    let fold = case_insensitive(rule.kind);
    let value = if fold { rule.value.to_ascii_lowercase() } else { rule.value.clone() };
    let matcher = match rule.compare {
        L7Compare::Regex => Matcher::Regex(
            crate::desired::l7_regex(&rule.value, fold).map_err(|e| format!("value {:?} is not a valid regular expression: {e}", rule.value))?,
        ),
        L7Compare::StartsWith => Matcher::StartsWith(value),
        L7Compare::EndsWith => Matcher::EndsWith(value),
        L7Compare::Contains => Matcher::Contains(value),
        L7Compare::EqualTo => Matcher::EqualTo(value),
    };
    Ok(Rule { kind: rule.kind, key: rule.key.clone(), matcher, invert: rule.invert })
}

impl L7Runtime {
    /// Compiles `policies`; `pool` finds the running pool a `REDIRECT_TO_POOL` names.
    pub fn build(policies: &[L7Policy], pool: impl Fn(&str) -> Option<Arc<PoolRuntime>>) -> Result<L7Runtime, String> {
        let policies = policies
            .iter()
            .filter(|p| !p.rules.is_empty())
            .map(|p| {
                let action = match &p.action {
                    L7Action::Reject => Action::Reject,
                    L7Action::RedirectToPool(id) => Action::Pool(pool(id).ok_or_else(|| format!("L7 policy {}: redirect pool {id} is not running", p.id))?),
                    L7Action::RedirectToUrl { url, code } => Action::Redirect { location: url.clone(), code: redirect_code(*code), prefix: false },
                    L7Action::RedirectPrefix { prefix, code } => Action::Redirect { location: prefix.trim_end_matches('/').to_string(), code: redirect_code(*code), prefix: true },
                };
                let rules = p.rules.iter().map(|r| compile(r).map_err(|e| format!("L7 policy {}: {e}", p.id))).collect::<Result<_, _>>()?;
                Ok(Policy { action, rules })
            })
            .collect::<Result<_, String>>()?;
        Ok(L7Runtime { policies })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The action of the first policy whose rules all match the request; `None`: the default
    /// pool serves it.
    pub fn decide(&self, req: &Parts, cert: Option<&ClientCert>) -> Option<&Action> {
        self.policies.iter().find(|p| p.rules.iter().all(|r| rule_matches(r, req, cert))).map(|p| &p.action)
    }
}

fn redirect_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).ok().filter(StatusCode::is_redirection).unwrap_or(StatusCode::FOUND)
}

fn rule_matches(rule: &Rule, req: &Parts, cert: Option<&ClientCert>) -> bool {
    let actual: Option<String> = match rule.kind {
        L7RuleKind::HostName => host(req).map(|h| h.to_ascii_lowercase()),
        L7RuleKind::Path => Some(req.uri.path().to_string()),
        L7RuleKind::FileType => {
            let last = req.uri.path().rsplit('/').next().unwrap_or_default();
            last.rsplit_once('.').map(|(_, ext)| ext.to_string())
        }
        L7RuleKind::Header => rule.key.as_deref().and_then(|k| req.headers.get(k)).and_then(|v| v.to_str().ok()).map(str::to_string),
        L7RuleKind::Cookie => rule.key.as_deref().and_then(|k| super::cookie::in_request(&req.headers, k)).map(String::from),
        L7RuleKind::SslConnHasCert => Some(if cert.is_some() { "true" } else { "false" }.to_string()),
        // lbd only completes handshakes whose certificate verified: 0 (X509_V_OK) when one was sent.
        L7RuleKind::SslVerifyResult => cert.map(|_| "0".to_string()),
        L7RuleKind::SslDnField => cert.zip(rule.key.as_deref()).and_then(|(c, k)| c.subject_field(k).map(str::to_string)),
    };
    // A missing value (no such header, no certificate) matches nothing; inverted, that is a
    // match, as with Octavia's HAProxy (`!acl`).
    actual.is_some_and(|a| rule.matcher.matches(&a)) != rule.invert
}

/// The request's host without the port: h2's `:authority` or HTTP/1.1's `Host`.
fn host(req: &Parts) -> Option<&str> {
    if let Some(h) = req.uri.host() {
        return Some(h.trim_start_matches('[').trim_end_matches(']'));
    }
    let raw = req.headers.get(http::header::HOST)?.to_str().ok()?;
    match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next(),
        None => raw.split(':').next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn rule(kind: L7RuleKind, compare: L7Compare, key: Option<&str>, value: &str, invert: bool) -> Rule {
        compile(&L7Rule { kind, compare, key: key.map(str::to_string), value: value.into(), invert }).unwrap()
    }

    #[test]
    fn each_rule_type_reads_its_part_of_the_request() {
        let req = parts("/static/img/logo.PNG?x=1", &[("host", "WWW.Example.com:8443"), ("x-canary", "yes"), ("cookie", "a=1; session=abc-b")]);
        let yes = |r: Rule| rule_matches(&r, &req, None);
        assert!(yes(rule(L7RuleKind::HostName, L7Compare::EqualTo, None, "www.example.com", false)));
        assert!(yes(rule(L7RuleKind::HostName, L7Compare::Regex, None, "^www\\.EXAMPLE\\.", false)));
        assert!(yes(rule(L7RuleKind::Path, L7Compare::StartsWith, None, "/static/", false)));
        assert!(!yes(rule(L7RuleKind::Path, L7Compare::Contains, None, "x=1", false)), "the query is not the path");
        assert!(yes(rule(L7RuleKind::FileType, L7Compare::Regex, None, "^(?i)(png|jpg)$", false)));
        assert!(yes(rule(L7RuleKind::Header, L7Compare::EqualTo, Some("X-Canary"), "yes", false)));
        assert!(yes(rule(L7RuleKind::Cookie, L7Compare::EndsWith, Some("session"), "-b", false)));
        assert!(!yes(rule(L7RuleKind::Cookie, L7Compare::EqualTo, Some("other"), "x", false)));
        assert!(!yes(rule(L7RuleKind::Header, L7Compare::EqualTo, Some("x-missing"), "x", false)), "a missing header matches nothing");
        assert!(yes(rule(L7RuleKind::Header, L7Compare::EqualTo, Some("x-missing"), "x", true)), "so the inverted rule matches (HAProxy's `!acl`)");
        assert!(yes(rule(L7RuleKind::Header, L7Compare::EqualTo, Some("x-canary"), "no", true)));
        assert!(yes(rule(L7RuleKind::SslConnHasCert, L7Compare::EqualTo, None, "False", false)));
        assert!(!yes(rule(L7RuleKind::SslVerifyResult, L7Compare::EqualTo, None, "0", false)));
        let h2 = parts("https://[2001:db8::1]:443/", &[]);
        assert_eq!(host(&h2), Some("2001:db8::1"));
    }

    #[test]
    fn a_bad_regex_is_an_error_naming_the_value() {
        let err = compile(&L7Rule { kind: L7RuleKind::Path, compare: L7Compare::Regex, key: None, value: "(".into(), invert: false }).err().unwrap();
        assert!(err.contains("\"(\""), "{err}");
    }
}
