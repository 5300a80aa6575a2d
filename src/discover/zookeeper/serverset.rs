//! Finagle/Aurora server-set members: parsing and encoding.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use super::format::{Malformed, Member, host_port, malformed, object};
use crate::discover::Endpoint;

/// The name prefix of server-set members (Finagle's `ServerSetImpl`); the sequence number follows.
pub(crate) const MEMBER_PREFIX: &str = "member_";

/// The only status whose members get traffic.
const ALIVE: &str = "ALIVE";

/// Parses a member: `serviceEndpoint` (or the additional endpoint `endpoint`), `status`, `shard`.
pub(crate) fn parse(bytes: &[u8], endpoint: Option<&str>) -> Result<Member, Malformed> {
    let obj = object(bytes)?;
    let service = match obj.get("serviceEndpoint") {
        Some(Value::Object(e)) => host_port(e, "serviceEndpoint")?,
        Some(_) => return Err(malformed("`serviceEndpoint` is not an object")),
        None => return Err(malformed("no `serviceEndpoint`")),
    };
    let additional = match obj.get("additionalEndpoints") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(malformed("`additionalEndpoints` is not an object")),
    };
    let status = match obj.get("status") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(malformed("`status` is not a string")),
        None => return Err(malformed("no `status`")),
    };
    let shard = match obj.get("shard") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|s| i32::try_from(s).ok())
                .ok_or_else(|| malformed("`shard` must be a 32-bit integer"))?,
        ),
    };
    let addr = match endpoint {
        None => service,
        Some(name) => match additional.get(name) {
            Some(Value::Object(e)) => host_port(e, &format!("additionalEndpoints.{name}"))?,
            Some(_) => {
                return Err(malformed(format!(
                    "`additionalEndpoints.{name}` is not an object"
                )));
            }
            None => {
                return Err(malformed(format!("no additional endpoint named `{name}`")));
            }
        },
    };
    if status != ALIVE {
        return Ok(Member::NotServing(format!("status {status}")));
    }
    let mut ep = Endpoint::new(addr);
    if let Some(shard) = shard {
        ep = ep.with_label("shard", shard.to_string());
    }
    Ok(Member::Serving(ep))
}

fn endpoint_json(addr: SocketAddr) -> Value {
    let mut e = Map::new();
    e.insert("host".to_owned(), Value::String(addr.ip().to_string()));
    e.insert("port".to_owned(), Value::from(addr.port()));
    Value::Object(e)
}

/// Encodes a member with status `ALIVE`, as Finagle's announcer writes it:
/// `{"serviceEndpoint":{..},"additionalEndpoints":{..},"status":"ALIVE","shard":N}` (`shard`
/// only when given).
pub(crate) fn encode(
    service: SocketAddr,
    additional: &BTreeMap<String, SocketAddr>,
    shard: Option<i32>,
) -> String {
    let mut obj = Map::new();
    obj.insert("serviceEndpoint".to_owned(), endpoint_json(service));
    let extra: Map<String, Value> = additional
        .iter()
        .map(|(name, addr)| (name.clone(), endpoint_json(*addr)))
        .collect();
    obj.insert("additionalEndpoints".to_owned(), Value::Object(extra));
    obj.insert("status".to_owned(), Value::String(ALIVE.to_owned()));
    if let Some(shard) = shard {
        obj.insert("shard".to_owned(), Value::from(shard));
    }
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const FULL: &[u8] = br#"{"serviceEndpoint":{"host":"10.0.0.1","port":31010},
        "additionalEndpoints":{"http":{"host":"10.0.0.1","port":31011},"admin":{"host":"::1","port":9990}},
        "status":"ALIVE","shard":3}"#;

    #[test]
    fn service_endpoint_status_and_shard() {
        let Member::Serving(ep) = parse(FULL, None).unwrap() else {
            panic!("ALIVE is serving")
        };
        assert_eq!(ep.addr(), addr("10.0.0.1:31010"));
        assert_eq!(ep.label("shard"), Some("3"));
        assert_eq!(ep.weight(), 1);
    }

    #[test]
    fn a_named_additional_endpoint_is_picked() {
        let Member::Serving(ep) = parse(FULL, Some("http")).unwrap() else {
            panic!()
        };
        assert_eq!(ep.addr(), addr("10.0.0.1:31011"));
        let Member::Serving(ep) = parse(FULL, Some("admin")).unwrap() else {
            panic!()
        };
        assert_eq!(ep.addr(), addr("[::1]:9990"));
        let err = parse(FULL, Some("thrift")).unwrap_err();
        assert!(err.0.contains("`thrift`"), "{err}");
    }

    #[test]
    fn only_alive_serves() {
        for status in [
            "DEAD", "STARTING", "STOPPING", "STOPPED", "WARNING", "alive",
        ] {
            let json = format!(
                r#"{{"serviceEndpoint":{{"host":"10.0.0.1","port":1}},"status":"{status}"}}"#
            );
            assert_eq!(
                parse(json.as_bytes(), None).unwrap(),
                Member::NotServing(format!("status {status}"))
            );
        }
        // No additionalEndpoints, no shard: still a member.
        let plain = br#"{"serviceEndpoint":{"host":"[::1]","port":80},"status":"ALIVE"}"#;
        assert_eq!(
            parse(plain, None).unwrap(),
            Member::Serving(Endpoint::new(addr("[::1]:80")))
        );
    }

    #[test]
    fn malformed_members_name_the_field() {
        for (bad, why) in [
            (&b"nope"[..], "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"status":"ALIVE"}"#, "no `serviceEndpoint`"),
            (br#"{"serviceEndpoint":1,"status":"ALIVE"}"#, "`serviceEndpoint` is not"),
            (br#"{"serviceEndpoint":{"port":1},"status":"ALIVE"}"#, "serviceEndpoint.host"),
            (
                br#"{"serviceEndpoint":{"host":"db.example","port":1},"status":"ALIVE"}"#,
                "not an IP address",
            ),
            (br#"{"serviceEndpoint":{"host":"10.0.0.1"},"status":"ALIVE"}"#, "serviceEndpoint.port"),
            (
                br#"{"serviceEndpoint":{"host":"10.0.0.1","port":0},"status":"ALIVE"}"#,
                "serviceEndpoint.port",
            ),
            (
                br#"{"serviceEndpoint":{"host":"10.0.0.1","port":70000},"status":"ALIVE"}"#,
                "serviceEndpoint.port",
            ),
            (br#"{"serviceEndpoint":{"host":"10.0.0.1","port":1}}"#, "no `status`"),
            (br#"{"serviceEndpoint":{"host":"10.0.0.1","port":1},"status":2}"#, "`status`"),
            (
                br#"{"serviceEndpoint":{"host":"10.0.0.1","port":1},"status":"ALIVE","shard":"a"}"#,
                "`shard`",
            ),
            (
                br#"{"serviceEndpoint":{"host":"10.0.0.1","port":1},"status":"ALIVE","additionalEndpoints":[]}"#,
                "`additionalEndpoints`",
            ),
        ] {
            let err = parse(bad, None).unwrap_err();
            assert!(err.0.contains(why), "{err} should mention {why}");
        }
    }

    #[test]
    fn encode_round_trips() {
        let extra = BTreeMap::from([("http".to_owned(), addr("127.0.0.1:8081"))]);
        let json = encode(addr("127.0.0.1:8080"), &extra, Some(2));
        assert_eq!(
            json,
            r#"{"additionalEndpoints":{"http":{"host":"127.0.0.1","port":8081}},"serviceEndpoint":{"host":"127.0.0.1","port":8080},"shard":2,"status":"ALIVE"}"#
        );
        let Member::Serving(ep) = parse(json.as_bytes(), Some("http")).unwrap() else {
            panic!()
        };
        assert_eq!(ep.addr(), addr("127.0.0.1:8081"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes and near-server-set text never panic; a rejection has a message.
        #[test]
        fn parse_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            text in r#"\{"serviceEndpoint":\{"host":"[0-9a-f.:\[\]]{0,20}","port":-?[0-9]{0,7}\},"status":"[A-Z]{0,6}"(,"shard":-?[0-9]{0,12})?\}"#,
            name in proptest::option::of("[a-z]{0,5}"),
        ) {
            for input in [&bytes[..], text.as_bytes()] {
                match parse(input, name.as_deref()) {
                    Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
                    Ok(Member::NotServing(why)) => proptest::prop_assert!(why.starts_with("status ")),
                    Ok(Member::Serving(ep)) => proptest::prop_assert!(ep.addr().port() != 0),
                }
            }
        }

        /// What `encode` writes, `parse` reads back, whichever endpoint is asked for.
        #[test]
        fn encode_round_trips_any_member(
            ip in proptest::prelude::any::<std::net::IpAddr>(),
            port in 1u16..,
            extra in proptest::collection::btree_map("[a-z]{1,6}", (proptest::prelude::any::<[u8; 4]>(), 1u16..), 0..4),
            shard in proptest::option::of(proptest::prelude::any::<i32>()),
        ) {
            let service = SocketAddr::new(ip, port);
            let additional: BTreeMap<String, SocketAddr> =
                extra.into_iter().map(|(n, (ip, p))| (n, SocketAddr::from((ip, p)))).collect();
            let json = encode(service, &additional, shard);
            let Member::Serving(ep) = parse(json.as_bytes(), None).unwrap() else {
                panic!("encoded members are ALIVE")
            };
            proptest::prop_assert_eq!(ep.addr(), service);
            proptest::prop_assert_eq!(ep.label("shard").map(str::to_owned), shard.map(|s| s.to_string()));
            for (name, addr) in &additional {
                let Member::Serving(ep) = parse(json.as_bytes(), Some(name)).unwrap() else {
                    panic!()
                };
                proptest::prop_assert_eq!(ep.addr(), *addr);
            }
        }
    }
}
