use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use serde::Deserialize;
use tokio::time::{Interval, MissedTickBehavior};

use super::report::Reporter;
use super::{BoxDiscover, Endpoint, Update};
use crate::telemetry::MetricLabels;
use crate::{BoxError, ConfigError};

/// The largest endpoint file read; a bigger file is reported as an error.
const MAX_FILE_LEN: usize = 16 * 1024 * 1024;

/// A discovery source that watches a file holding a JSON or TOML list of endpoints.
///
/// # Format
///
/// Each endpoint has an `addr` (`"ip:port"`, required), a `weight` (at least 1, default 1) and
/// `labels` (a map of strings, default empty). Unknown fields, a zero weight and two endpoints with
/// the same address are errors. JSON is either a bare array or an object with an `endpoints` array:
///
/// ```json
/// [
///   {"addr": "127.0.0.1:8080", "weight": 2, "labels": {"zone": "a"}},
///   {"addr": "[::1]:8080"}
/// ]
/// ```
///
/// TOML has an array of tables named `endpoints`:
///
/// ```toml
/// [[endpoints]]
/// addr = "127.0.0.1:8080"
/// weight = 2
/// labels = { zone = "a" }
/// ```
///
/// The format comes from the extension (`.json`, `.toml`), or else from the content (JSON starts
/// with `{`, or with `[` followed by `{` or `]`). An explicitly empty list (`[]`,
/// `{"endpoints": []}`, `endpoints = []`) positively says the service has no endpoints; an empty file
/// is malformed, not empty.
///
/// # Watching
///
/// The path is re-opened and read on every poll (default every 250 ms, so a change is picked up
/// well within a second), and the content compared with the last good content. Re-opening the
/// path makes it safe against atomic renames (`mv new endpoints.json`) and editors that replace the
/// file, and comparing content means touching a file without changing it yields nothing.
///
/// # Failures
///
/// A missing, unreadable, oversized (over 16 MiB) or malformed file never empties the set: the
/// source yields an `Err` item ([`FileError`], whose message carries the parser's reason with line
/// and column), logs it at warn and counts it, and consumers keep the last good set. Once a good
/// set has been published, a bad state must be seen on two polls in a row before it is reported,
/// so a half-written file or the instant between an editor's unlink and write does not raise a
/// false alarm; each distinct bad state is reported once, not on every poll. At start (nothing to
/// keep yet), a missing or malformed file is reported at once.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use meshwork::discover::{Update, WatchFile};
///
/// # async fn run() -> Result<(), meshwork::ConfigError> {
/// let mut source = WatchFile::builder("/etc/myapp/users.json")
///     .interval(std::time::Duration::from_millis(500))
///     .build()?;
/// while let Some(item) = source.next().await {
///     match item {
///         Ok(Update::Reset(set)) => println!("{} endpoints", set.len()),
///         Ok(other) => println!("{other:?}"),
///         Err(e) => eprintln!("keeping the last set: {e}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct WatchFile {
    inner: BoxDiscover,
}

impl WatchFile {
    /// Watches `path` with the default settings.
    #[allow(
        clippy::missing_panics_doc,
        reason = "only `expect`s on constant, tested defaults"
    )]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::builder(path)
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a source watching `path`.
    pub fn builder(path: impl Into<PathBuf>) -> WatchFileBuilder {
        WatchFileBuilder {
            path: path.into(),
            interval: Duration::from_millis(250),
            labels: MetricLabels::new(),
        }
    }
}

impl Stream for WatchFile {
    type Item = Result<Update, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for WatchFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchFile").finish_non_exhaustive()
    }
}

/// Configures a [`WatchFile`].
#[derive(Clone, Debug)]
pub struct WatchFileBuilder {
    path: PathBuf,
    interval: Duration,
    labels: MetricLabels,
}

impl WatchFileBuilder {
    /// How often the file is read (default 250 ms). Must be greater than zero.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Static labels for the source's metrics.
    #[must_use]
    pub fn labels(mut self, labels: MetricLabels) -> Self {
        self.labels = labels;
        self
    }

    /// Builds the source; fails on a zero interval. The file is first read on the first poll.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `interval` when it is zero.
    pub fn build(self) -> Result<WatchFile, ConfigError> {
        let interval = crate::error::non_zero("interval", self.interval)?;
        let watcher = Watcher {
            path: Arc::from(self.path),
            ticker: None,
            interval,
            last_good: None,
            bad: None,
            reporter: Reporter::new("file", &self.labels),
        };
        Ok(WatchFile {
            inner: Box::pin(futures_util::stream::unfold(watcher, Watcher::next)),
        })
    }
}

/// What a poll saw that could not be used, to report each distinct bad state once.
#[derive(PartialEq, Eq)]
enum Bad {
    Content(Vec<u8>),
    Io(io::ErrorKind),
}

struct Watcher {
    path: Arc<Path>,
    /// Created lazily: `tokio::time::interval` needs a runtime, `build` may run outside one.
    ticker: Option<Interval>,
    interval: Duration,
    last_good: Option<Vec<u8>>,
    /// The current bad state, and whether it was reported.
    bad: Option<(Bad, bool)>,
    reporter: Reporter,
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Update, BoxError>, Self)> {
        loop {
            let ticker = self.ticker.get_or_insert_with(|| {
                let mut t = tokio::time::interval(self.interval);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            });
            ticker.tick().await;
            let (bad, err) = match tokio::fs::read(&*self.path).await {
                Ok(bytes) if self.last_good.as_ref() == Some(&bytes) => {
                    self.bad = None;
                    continue;
                }
                Ok(bytes) if bytes.len() > MAX_FILE_LEN => {
                    let err = FileError::new(&self.path, Kind::TooLarge(bytes.len()));
                    (Bad::Content(bytes), err)
                }
                Ok(bytes) => match parse(&self.path, &bytes) {
                    Ok(endpoints) => {
                        self.bad = None;
                        self.last_good = Some(bytes);
                        self.reporter.reset(endpoints.len());
                        return Some((Ok(Update::Reset(endpoints)), self));
                    }
                    Err(reason) => {
                        let err = FileError::new(&self.path, Kind::Malformed(reason));
                        (Bad::Content(bytes), err)
                    }
                },
                Err(io) => (Bad::Io(io.kind()), FileError::new(&self.path, Kind::Io(io))),
            };
            match &mut self.bad {
                Some((seen, reported)) if *seen == bad => {
                    if *reported {
                        continue;
                    }
                    *reported = true;
                }
                _ => {
                    // A new bad state: with a good set to protect, confirm it on the next poll.
                    let report_now = self.last_good.is_none();
                    self.bad = Some((bad, report_now));
                    if !report_now {
                        continue;
                    }
                }
            }
            self.reporter.error(&err);
            return Some((Err(Box::new(err)), self));
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    addr: SocketAddr,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    endpoints: Vec<Spec>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Toml,
}

fn format_of(path: &Path, bytes: &[u8]) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => return Format::Json,
        Some(e) if e.eq_ignore_ascii_case("toml") => return Format::Toml,
        _ => {}
    }
    let mut rest = bytes.iter().filter(|b| !b.is_ascii_whitespace());
    match (rest.next(), rest.next()) {
        (Some(b'{'), _) | (Some(b'['), Some(b'{' | b']')) => Format::Json,
        _ => Format::Toml,
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Endpoint>, String> {
    let specs = match format_of(path, bytes) {
        Format::Json => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                serde_json::from_slice::<Vec<Spec>>(bytes)
            } else {
                serde_json::from_slice::<Document>(bytes).map(|d| d.endpoints)
            }
            .map_err(|e| format!("invalid JSON: {e}"))?
        }
        Format::Toml => {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
            toml::from_str::<Document>(text)
                .map(|d| d.endpoints)
                .map_err(|e| format!("invalid TOML: {}", e.to_string().trim_end()))?
        }
    };
    let mut seen = HashSet::with_capacity(specs.len());
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            if !seen.insert(spec.addr) {
                return Err(format!("endpoint {i}: duplicate address {}", spec.addr));
            }
            let ep = Endpoint::new(spec.addr)
                .with_weight(spec.weight)
                .map_err(|e| format!("endpoint {i} ({}): {e}", spec.addr))?;
            Ok(spec
                .labels
                .into_iter()
                .fold(ep, |ep, (k, v)| ep.with_label(k, v)))
        })
        .collect()
}

/// A [`WatchFile`] source could not use its file; the consumer keeps the last good set.
#[derive(Debug)]
pub struct FileError {
    path: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Io(io::Error),
    TooLarge(usize),
    Malformed(String),
}

impl FileError {
    fn new(path: &Path, kind: Kind) -> Self {
        Self {
            path: path.to_owned(),
            kind,
        }
    }

    /// The watched path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file does not exist (yet, or any more).
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(&self.kind, Kind::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// The file was read but its content is not a valid endpoint list.
    #[must_use]
    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, Kind::Malformed(_) | Kind::TooLarge(_))
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            Kind::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                write!(f, "endpoint file {path} not found")
            }
            Kind::Io(e) => write!(f, "endpoint file {path} unreadable: {e}"),
            Kind::TooLarge(n) => write!(
                f,
                "endpoint file {path} is too large ({n} bytes, at most {MAX_FILE_LEN})"
            ),
            Kind::Malformed(reason) => write!(f, "endpoint file {path} is malformed: {reason}"),
        }
    }
}

impl Error for FileError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn json_array_and_object() {
        let p = Path::new("x.json");
        let eps = parse(
            p,
            br#"[{"addr": "127.0.0.1:1", "weight": 2, "labels": {"zone": "a"}}, {"addr": "[::1]:2"}]"#,
        )
        .unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].weight(), 2);
        assert_eq!(eps[0].label("zone"), Some("a"));
        assert_eq!(eps[1], Endpoint::new(addr("[::1]:2")));
        let eps = parse(p, br#"{"endpoints": [{"addr": "127.0.0.1:1"}]}"#).unwrap();
        assert_eq!(eps, [Endpoint::new(addr("127.0.0.1:1"))]);
        assert_eq!(parse(p, b"[]").unwrap(), []);
    }

    #[test]
    fn toml_tables() {
        let text = "[[endpoints]]\naddr = \"127.0.0.1:1\"\nweight = 3\nlabels = { zone = \"b\" }\n\n[[endpoints]]\naddr = \"127.0.0.1:2\"\n";
        let eps = parse(Path::new("x.toml"), text.as_bytes()).unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].weight(), 3);
        assert_eq!(eps[0].label("zone"), Some("b"));
        assert_eq!(parse(Path::new("x.toml"), b"endpoints = []").unwrap(), []);
    }

    #[test]
    fn format_is_sniffed_without_an_extension() {
        let p = Path::new("endpoints");
        assert_eq!(format_of(p, b" [ {\"addr\":1}]"), Format::Json);
        assert_eq!(format_of(p, b"[]"), Format::Json);
        assert_eq!(format_of(p, b"{}"), Format::Json);
        assert_eq!(format_of(p, b"[[endpoints]]"), Format::Toml);
        let text = "[[endpoints]]\naddr = \"127.0.0.1:1\"\n";
        assert_eq!(parse(p, text.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse(p, br#"[{"addr": "127.0.0.1:1"}]"#).unwrap().len(), 1);
    }

    #[test]
    fn rejects_bad_content_with_a_reason() {
        let p = Path::new("x.json");
        let err = parse(p, br#"[{"addr": "127.0.0.1:1", "wieght": 2}]"#).unwrap_err();
        assert!(err.contains("wieght"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        let err = parse(p, br#"[{"addr": "nope"}]"#).unwrap_err();
        assert!(err.contains("invalid JSON"), "{err}");
        let err = parse(p, br#"[{"addr": "127.0.0.1:1", "weight": 0}]"#).unwrap_err();
        assert!(err.contains("weight"), "{err}");
        let err = parse(p, br#"[{"addr": "127.0.0.1:1"}, {"addr": "127.0.0.1:1"}]"#).unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
        assert!(parse(p, b"").is_err());
        assert!(
            parse(Path::new("x.toml"), b"").is_err(),
            "an empty file is not an empty set"
        );
        let err = parse(Path::new("x.toml"), b"[[endpoints]]\nport = 1\n").unwrap_err();
        assert!(
            err.contains("invalid TOML") && err.contains("port"),
            "{err}"
        );
    }

    #[test]
    fn zero_interval_is_rejected() {
        let err = WatchFile::builder("x.json")
            .interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "interval");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes as a JSON or TOML endpoint file never panic; a rejection has a message.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
                              text in "[\\[\\]{}\"=,:a-z0-9. \n]{0,64}") {
            for name in ["eps.json", "eps.toml"] {
                for input in [&bytes[..], text.as_bytes()] {
                    if let Err(e) = parse(Path::new(name), input) {
                        proptest::prop_assert!(!e.is_empty());
                    }
                }
            }
        }
    }
}
