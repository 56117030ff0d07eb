//! Reading and setting cookies on proxied messages: L7 `COOKIE` rules and cookie persistence.

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn in_request<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The value a response's `Set-Cookie` headers give cookie `name` (the last one wins).
pub fn set_by_response<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::SET_COOKIE).iter().rev().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let (k, rest) = v.split_once('=')?;
        (k.trim() == name).then(|| rest.split(';').next().unwrap_or("").trim())
    })
}

/// Removes cookie `name` from a request's `Cookie` headers (lb's own cookie is not for the member).
pub fn remove_from_request(headers: &mut HeaderMap, name: &str) {
    if in_request(headers, name).is_none() {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').is_none_or(|(k, _)| k != name))
        .map(String::from)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Adds `Set-Cookie: name=value; path=/` to a response, marked private so shared caches do not
/// hand one client's member to others.
pub fn set(headers: &mut HeaderMap, name: &str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; path=/")) {
        headers.append(header::SET_COOKIE, v);
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(header::HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookies_are_found_removed_and_set() {
        let mut req = map(&[("cookie", "a=1; SRV=m-2"), ("cookie", "b=2")]);
        assert_eq!(in_request(&req, "SRV"), Some("m-2"));
        assert_eq!(in_request(&req, "b"), Some("2"));
        assert_eq!(in_request(&req, "SR"), None);
        remove_from_request(&mut req, "SRV");
        assert_eq!(req.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only = map(&[("cookie", "SRV=x")]);
        remove_from_request(&mut only, "SRV");
        assert!(!only.contains_key(header::COOKIE));

        let resp = map(&[("set-cookie", "other=1"), ("set-cookie", "JSESSIONID=abc123; Path=/; HttpOnly")]);
        assert_eq!(set_by_response(&resp, "JSESSIONID"), Some("abc123"));
        assert_eq!(set_by_response(&resp, "nope"), None);
        let mut resp = map(&[("cache-control", "no-store")]);
        set(&mut resp, "SRV", "m-1");
        assert_eq!(resp.get(header::SET_COOKIE).unwrap(), "SRV=m-1; path=/");
        assert_eq!(resp.get(header::CACHE_CONTROL).unwrap(), "no-store");
    }
}
