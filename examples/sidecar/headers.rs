//! Header rewriting at the proxy: hop-by-hop headers removed in both directions (RFC 9110 §7.6.1;
//! `TE: trailers` survives on requests, as gRPC needs),
//! `X-Forwarded-For`, `Forwarded` and `Via` added on the way to the upstream, `Via` on the way back.
//!
//! `Via` names this sidecar instance: `1.1 meshwork-<token>`, the token random per process, so
//! that a request coming back to the sidecar that already forwarded it (an upstream that is the
//! sidecar itself, or a cycle of sidecars) is recognised at the first repeat ([`has_our_via`]) and
//! refused with 508, instead of looping until its headers outgrow the limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// This instance's `Via` entry: `1.1 meshwork-<8 hex digits>`.
pub fn via() -> &'static HeaderValue {
    static VIA: OnceLock<HeaderValue> = OnceLock::new();
    VIA.get_or_init(|| {
        HeaderValue::try_from(format!("1.1 meshwork-{:08x}", rand::random::<u32>())).expect("ASCII")
    })
}

/// This instance's name in `Via` (`meshwork-<token>`).
fn received_by() -> &'static str {
    let v = via().to_str().expect("ASCII");
    &v["1.1 ".len()..]
}

/// Whether any `Via` entry of `headers` is this instance's: the request has been here before.
pub fn has_our_via(headers: &HeaderMap) -> bool {
    let ours = received_by();
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().nth(1) == Some(ours))
}

/// Headers that concern one connection, never forwarded. `Trailer` is not one of them (RFC 9110
/// §6.6.2): it declares the trailer fields, and hyper's HTTP/1 encoder sends only declared ones.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`, `Proxy-*`,
/// `TE`, `Transfer-Encoding` and `Upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// [`remove_hop_by_hop`] for a request, except that `TE: trailers` is kept when the client sent
/// it: this proxy passes trailers through, and gRPC servers require the header.
pub fn remove_hop_by_hop_request(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        });
    remove_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Adds `X-Forwarded-For` (appended to any the client sent), `Forwarded: for=…` (RFC 7239,
/// likewise appended) and `Via`. With `trust = false` the client's own `X-Forwarded-For` and
/// `Forwarded` are discarded first (`x_forwarded_for = "replace"` for an untrusted peer).
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &str, trust: bool) {
    if !trust {
        headers.remove("x-forwarded-for");
        headers.remove(header::FORWARDED);
    }
    let ip = client.ip();
    let xff = match joined(headers, "x-forwarded-for") {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    insert(headers, HeaderName::from_static("x-forwarded-for"), xff);

    let fwd = match ip {
        IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
    };
    let fwd = match joined(headers, header::FORWARDED.as_str()) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    insert(headers, header::FORWARDED, fwd);
    add_via(headers);
}

/// Appends this proxy to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    match joined(headers, header::VIA.as_str()) {
        Some(prev) => insert(
            headers,
            header::VIA,
            format!("{prev}, {}", via().to_str().expect("ASCII")),
        ),
        // The usual case, on every request and response: a shared value, no formatting.
        None => {
            headers.insert(header::VIA, via().clone());
        }
    }
}

/// Every value of a list header, joined with `, ` (a client may send the header more than once).
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_via_is_recognised_among_others() {
        let v = via().to_str().unwrap();
        assert!(
            v.starts_with("1.1 meshwork-") && v.len() == "1.1 meshwork-".len() + 8,
            "{v}"
        );
        let mut h = HeaderMap::new();
        assert!(!has_our_via(&h));
        h.insert(
            header::VIA,
            "1.0 fred, 1.1 meshwork-00000000".parse().unwrap(),
        );
        assert!(!has_our_via(&h) || v.ends_with("00000000"));
        h.append(
            header::VIA,
            format!("1.1 p, {v} (comment)").parse().unwrap(),
        );
        assert!(has_our_via(&h));
    }

    #[test]
    fn hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_survives_on_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip, trailers".parse().unwrap());
        remove_hop_by_hop_request(&mut h);
        assert_eq!(h[header::TE], "trailers");
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        remove_hop_by_hop_request(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1:5000".parse().unwrap(), "http", false);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h[header::FORWARDED], "for=127.0.0.1;proto=http");
    }

    #[test]
    fn forwarded_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1:5000".parse().unwrap(), "http", true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h[header::FORWARDED], "for=127.0.0.1;proto=http");
        assert_eq!(&h[header::VIA], via());
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "[::1]:5000".parse().unwrap(), "http", true);
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }
}
