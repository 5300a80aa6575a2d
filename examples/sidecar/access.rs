//! The access log: one structured line per request on stderr, in logfmt or JSON
//! (`access_log_format`), written when the response body ends (or the client goes away), so that
//! it carries the whole exchange:
//!
//! | field | what |
//! |---|---|
//! | `ts` | Unix time of the request's arrival, in seconds with milliseconds |
//! | `request_id` | the client's `x-request-id`, or one generated (and forwarded) when absent |
//! | `client` | the client's address |
//! | `method`, `authority`, `path` | the request (`authority`: `:authority` or Host, `-` if none) |
//! | `route` | the matching route's index (`-` when none matched) |
//! | `upstream`, `endpoint` | where it went (the endpoint of the last try), `-` when nowhere |
//! | `status` | the status sent to the client |
//! | `tries` | tries made on endpoints (0 when none was reached) |
//! | `bytes_in`, `bytes_out` | request and response body bytes |
//! | `duration_ms` | from arrival to the end of the response body |
//! | `error` | the reason of a response made by the sidecar itself (`-` for the upstream's own) |
//!
//! Lines are written whole with one `write` to stderr, beside the `tracing` logs, and are not
//! filtered by `RUST_LOG`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use tokio::time::Instant;

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `key=value` pairs (default).
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The reason of a response the sidecar made itself, kept in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub struct LocalReason(pub &'static str);

/// The tries of one request, recorded by each endpoint's connection layer. Carried in the
/// request's extensions, so every retry shares it.
#[derive(Clone, Default)]
pub struct Tries(Arc<TriesInner>);

#[derive(Default)]
struct TriesInner {
    count: AtomicU32,
    endpoint: Mutex<Option<SocketAddr>>,
}

impl Tries {
    /// A try is sent to `endpoint`.
    pub fn record(&self, endpoint: SocketAddr) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        *self.0.endpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint);
    }

    fn get(&self) -> (u32, Option<SocketAddr>) {
        let endpoint = *self.0.endpoint.lock().unwrap_or_else(|e| e.into_inner());
        (self.0.count.load(Ordering::Relaxed), endpoint)
    }
}

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One request's line, written when dropped.
pub struct Entry {
    /// The line's format.
    pub format: Format,
    /// Arrival, for `duration_ms`.
    pub start: Instant,
    /// Arrival, for `ts`.
    pub ts: SystemTime,
    /// `request_id`.
    pub request_id: String,
    /// `client`.
    pub client: SocketAddr,
    /// `method`.
    pub method: String,
    /// `authority`.
    pub authority: Option<String>,
    /// `path`.
    pub path: String,
    /// `route`: the index of the matching route.
    pub route: Option<usize>,
    /// `upstream`.
    pub upstream: Option<Arc<str>>,
    /// `tries` and `endpoint`, recorded by the endpoints' connection layer.
    pub tries: Tries,
    /// `bytes_in`, counted by the client's body.
    pub bytes_in: Option<crate::client_body::BodyStatus>,
    /// `status`.
    pub status: u16,
    /// `error`: the reason of a local answer.
    pub error: Option<&'static str>,
    /// `bytes_out`, counted as the response body is sent.
    pub bytes_out: AtomicU64,
}

impl Entry {
    /// Counts response body bytes.
    pub fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let ts = self
            .ts
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let (tries, endpoint) = self.tries.get();
        let fields: [(&str, Value<'_>); 16] = [
            (
                "ts",
                Value::Raw(format!("{}.{:03}", ts.as_secs(), ts.subsec_millis())),
            ),
            ("request_id", Value::Str(&self.request_id)),
            ("client", Value::Owned(self.client.to_string())),
            ("method", Value::Str(&self.method)),
            ("authority", opt(self.authority.as_deref())),
            ("path", Value::Str(&self.path)),
            (
                "route",
                self.route
                    .map_or(Value::Null, |r| Value::Raw(r.to_string())),
            ),
            ("upstream", opt(self.upstream.as_deref())),
            (
                "endpoint",
                endpoint.map_or(Value::Null, |e| Value::Owned(e.to_string())),
            ),
            ("status", Value::Raw(self.status.to_string())),
            ("tries", Value::Raw(tries.to_string())),
            (
                "bytes_in",
                Value::Raw(self.bytes_in.as_ref().map_or(0, |b| b.bytes()).to_string()),
            ),
            (
                "bytes_out",
                Value::Raw(self.bytes_out.load(Ordering::Relaxed).to_string()),
            ),
            (
                "duration_ms",
                Value::Raw(format!("{:.3}", self.start.elapsed().as_secs_f64() * 1e3)),
            ),
            ("error", opt(self.error)),
            ("kind", Value::Str("access")),
        ];
        let mut out = String::with_capacity(256);
        match self.format {
            Format::Logfmt => {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}=");
                    v.logfmt(&mut out);
                }
            }
            Format::Json => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "\"{k}\":");
                    v.json(&mut out);
                }
                out.push('}');
            }
        }
        out.push('\n');
        out
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let line = self.line();
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn opt(s: Option<&str>) -> Value<'_> {
    s.map_or(Value::Null, Value::Str)
}

/// A field value: a number (as is), a string (quoted when needed), or absent.
enum Value<'a> {
    Raw(String),
    Str(&'a str),
    Owned(String),
    Null,
}

impl Value<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Owned(s) => Some(s),
            _ => None,
        }
    }

    fn logfmt(&self, out: &mut String) {
        match (self, self.text()) {
            (Value::Raw(s), _) => out.push_str(s),
            (_, Some(s)) if !s.is_empty() && !s.contains([' ', '"', '=', '\\']) && s.is_ascii() => {
                out.push_str(s);
            }
            (_, Some(s)) => quote(s, out),
            _ => out.push('-'),
        }
    }

    fn json(&self, out: &mut String) {
        match (self, self.text()) {
            (Value::Raw(s), _) => out.push_str(s),
            (_, Some(s)) => quote(s, out),
            _ => out.push_str("null"),
        }
    }
}

/// `s` as a JSON string literal (also valid logfmt quoting).
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(format: Format) -> Entry {
        let tries = Tries::default();
        tries.record("127.0.0.1:8081".parse().unwrap());
        Entry {
            format,
            start: Instant::now(),
            ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            request_id: "abc".into(),
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET".into(),
            authority: None,
            path: "/a \"b\"".into(),
            route: Some(0),
            upstream: Some("users".into()),
            tries,
            bytes_in: None,
            status: 200,
            error: None,
            bytes_out: AtomicU64::new(12),
        }
    }

    #[test]
    fn lines_in_both_formats() {
        let e = entry(Format::Logfmt);
        let line = e.line();
        assert!(
            line.starts_with("ts=1700000000.123 request_id=abc client=127.0.0.1:5000 method=GET authority=- path=\"/a \\\"b\\\"\" route=0 upstream=users endpoint=127.0.0.1:8081 status=200 tries=1 bytes_in=0 bytes_out=12 duration_ms="),
            "{line}"
        );
        assert!(line.ends_with(" error=- kind=access\n"), "{line}");
        std::mem::forget(e);
        let e = entry(Format::Json);
        let line = e.line();
        assert!(
            line.starts_with("{\"ts\":1700000000.123,\"request_id\":\"abc\",\"client\":\"127.0.0.1:5000\",\"method\":\"GET\",\"authority\":null,\"path\":\"/a \\\"b\\\"\",\"route\":0,"),
            "{line}"
        );
        assert!(
            line.ends_with(",\"error\":null,\"kind\":\"access\"}\n"),
            "{line}"
        );
        std::mem::forget(e);
    }
}
