//! Property tests of the parsers that see the network (issue 12): arbitrary input never panics,
//! what is rejected is rejected cleanly (`None`: the header is ignored), and what is written parses
//! back to no more than the original.
#![cfg(feature = "http")]

use std::time::Duration;

use http::{HeaderValue, Request, Response};
use meshwork::BoxError;
use meshwork::classify::{Classify, HttpClassify};
use meshwork::http::{DEADLINE_HEADER, GRPC_TIMEOUT, format_grpc_timeout, parse_grpc_timeout};
use meshwork::timeout::CarryDeadline;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Header values: arbitrary visible bytes, or shapes close to the valid ones.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,24}",
        "[0-9]{0,22}[HMSmun]?",
        "-?[0-9]{1,20}",
        "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9:]{8} GMT",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn grpc_timeout_parser_never_panics_and_accepts_only_its_grammar(s in header_text()) {
        let parsed = parse_grpc_timeout(&s);
        let valid = s.len() >= 2
            && s.len() <= 9
            && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && matches!(s.as_bytes()[s.len() - 1], b'H' | b'M' | b'S' | b'm' | b'u' | b'n');
        prop_assert_eq!(parsed.is_some(), valid, "{:?}", s);
    }

    #[test]
    fn written_grpc_timeout_parses_back_to_at_most_the_original(nanos in any::<u64>(), secs in 0u64..u64::MAX / 2) {
        for d in [Duration::from_nanos(nanos), Duration::new(secs, 0)] {
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(&text);
            prop_assert!(back.is_some(), "{:?} -> {:?}", d, text);
            prop_assert!(back.unwrap() <= d, "{:?} -> {:?} -> {:?}", d, text, back);
        }
    }

    #[test]
    fn deadline_headers_never_panic_and_bad_values_are_ignored(s in header_text(), grpc in any::<bool>()) {
        let Ok(value) = HeaderValue::from_str(&s) else { return Ok(()) };
        let name = if grpc { GRPC_TIMEOUT } else { DEADLINE_HEADER };
        let req = Request::builder().header(name, value).body(()).unwrap();
        let budget = req.incoming_budget();
        if !grpc {
            let valid = !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
            prop_assert_eq!(budget, valid.then(|| Duration::from_millis(s.parse().unwrap())));
        } else {
            prop_assert_eq!(budget, parse_grpc_timeout(&s));
        }
    }

    #[test]
    fn retry_after_never_panics(s in header_text(), status in prop::sample::select(vec![429u16, 503])) {
        let Ok(value) = HeaderValue::from_str(&s) else { return Ok(()) };
        let res = Response::builder().status(status).header("retry-after", value).body(()).unwrap();
        let c = HttpClassify::new().classify(Ok::<_, &BoxError>(&res));
        if let Ok(secs) = s.trim().parse::<u64>() {
            prop_assert_eq!(c.retry_after(), Some(Duration::from_secs(secs)));
        } else if httpdate::parse_http_date(s.trim()).is_err() {
            prop_assert_eq!(c.retry_after(), None, "malformed: ignored");
        }
    }
}
