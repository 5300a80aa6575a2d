//! The JSON value of one endpoint key: parsing (both accepted forms) and encoding (the Go form).

use std::fmt;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use crate::discover::Endpoint;

/// Why a key's value was not understood. Internal: a malformed value is skipped with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(msg: impl Into<String>) -> Malformed {
    Malformed(msg.into())
}

/// Parses one value, in etcd's endpoint-manager form (`{"Addr": .., "Metadata": ..}`) or meshwork's
/// form (`{"addr": .., "weight": .., "labels": {..}}`). See the module docs for the rules.
pub(crate) fn parse(bytes: &[u8]) -> Result<Endpoint, Malformed> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(malformed("not a JSON object"));
    };
    let addr = match (obj.get("Addr"), obj.get("addr")) {
        (Some(Value::String(a)), _) | (None, Some(Value::String(a))) => a,
        (None, None) => return Err(malformed("no `Addr` or `addr` field")),
        _ => return Err(malformed("the address is not a string")),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        malformed(format!(
            "address {addr:?} is not an `ip:port` socket address"
        ))
    })?;

    let mut weight = None;
    let mut labels: Vec<(String, String)> = Vec::new();
    match obj.get("Metadata") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => labels.push(("metadata".to_owned(), s.clone())),
        Some(Value::Object(meta)) => {
            if let Some(w) = meta.get("weight") {
                weight = Some(parse_weight(w)?);
            }
            labels.extend(string_fields(meta, "weight"));
        }
        // Go's `Metadata` is `interface{}`: numbers, booleans and arrays carry nothing meshwork
        // understands, but they do not make the address unusable.
        Some(_) => {}
    }
    if let Some(w) = obj.get("weight") {
        weight = Some(parse_weight(w)?);
    }
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) => labels.extend(string_fields(l, "")),
        Some(_) => return Err(malformed("`labels` is not an object")),
    }

    let mut ep = Endpoint::new(addr);
    if let Some(w) = weight {
        ep = ep
            .with_weight(w)
            .map_err(|_| malformed("`weight` must be at least 1"))?;
    }
    for (k, v) in labels {
        ep = ep.with_label(k, v);
    }
    Ok(ep)
}

fn parse_weight(v: &Value) -> Result<u32, Malformed> {
    v.as_u64()
        .and_then(|w| u32::try_from(w).ok())
        .filter(|w| *w >= 1)
        .ok_or_else(|| malformed("`weight` must be an integer from 1 to 4294967295"))
}

fn string_fields<'a>(
    map: &'a Map<String, Value>,
    skip: &'a str,
) -> impl Iterator<Item = (String, String)> + 'a {
    map.iter().filter_map(move |(k, v)| match v {
        Value::String(s) if k != skip => Some((k.clone(), s.clone())),
        _ => None,
    })
}

/// Encodes an endpoint in etcd's endpoint-manager form, so that Go resolvers understand it too:
/// `{"Addr":"ip:port","Metadata":{"weight":3,"zone":"a"}}`; `Metadata` is `null` for an endpoint
/// with weight 1 and no labels. A label named `weight` is not written (the weight takes its place).
pub(crate) fn encode(ep: &Endpoint) -> String {
    let mut obj = Map::new();
    obj.insert("Addr".to_owned(), Value::String(ep.addr().to_string()));
    let mut meta = Map::new();
    for (k, v) in ep.labels() {
        if k != "weight" {
            meta.insert(k.clone(), Value::String(v.clone()));
        }
    }
    if ep.weight() != 1 {
        meta.insert("weight".to_owned(), Value::from(ep.weight()));
    }
    let meta = if meta.is_empty() {
        Value::Null
    } else {
        Value::Object(meta)
    };
    obj.insert("Metadata".to_owned(), meta);
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn go_form_with_null_string_and_object_metadata() {
        let ep = parse(br#"{"Addr":"127.0.0.1:8080","Metadata":null}"#).unwrap();
        assert_eq!(ep, Endpoint::new(addr("127.0.0.1:8080")));

        let ep = parse(br#"{"Addr":"127.0.0.1:8080"}"#).unwrap();
        assert_eq!(ep, Endpoint::new(addr("127.0.0.1:8080")));

        let ep = parse(br#"{"Addr":"[::1]:9000","Metadata":"canary"}"#).unwrap();
        assert_eq!(ep.addr(), addr("[::1]:9000"));
        assert_eq!(ep.label("metadata"), Some("canary"));

        let ep = parse(
            br#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":3,"zone":"a","n":7,"deep":{"x":1}}}"#,
        )
        .unwrap();
        assert_eq!(ep.weight(), 3);
        assert_eq!(ep.label("zone"), Some("a"));
        assert_eq!(ep.labels().len(), 1, "only string fields become labels");

        // Go's Metadata is interface{}: other JSON types are accepted and ignored.
        let ep = parse(br#"{"Addr":"10.0.0.1:80","Metadata":[1,2]}"#).unwrap();
        assert_eq!(ep, Endpoint::new(addr("10.0.0.1:80")));
    }

    #[test]
    fn meshwork_form() {
        let ep = parse(br#"{"addr":"10.0.0.2:81","weight":5,"labels":{"zone":"b"}}"#).unwrap();
        assert_eq!(ep.addr(), addr("10.0.0.2:81"));
        assert_eq!(ep.weight(), 5);
        assert_eq!(ep.label("zone"), Some("b"));
    }

    #[test]
    fn malformed_values_are_rejected_with_a_reason() {
        for (bad, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no `Addr`"),
            (br#"{"Addr":5}"#, "not a string"),
            (br#"{"Addr":"example.com:80"}"#, "socket address"),
            (br#"{"Addr":"10.0.0.1"}"#, "socket address"),
            (br#"{"addr":"10.0.0.1:80","weight":0}"#, "weight"),
            (br#"{"addr":"10.0.0.1:80","weight":-2}"#, "weight"),
            (br#"{"addr":"10.0.0.1:80","weight":1.5}"#, "weight"),
            (
                br#"{"Addr":"10.0.0.1:80","Metadata":{"weight":"3"}}"#,
                "weight",
            ),
            (br#"{"addr":"10.0.0.1:80","labels":[]}"#, "labels"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.0.contains(why), "{err} should mention {why}");
        }
    }

    #[test]
    fn encode_round_trips_through_parse() {
        let plain = Endpoint::new(addr("127.0.0.1:1"));
        assert_eq!(encode(&plain), r#"{"Addr":"127.0.0.1:1","Metadata":null}"#);
        assert_eq!(parse(encode(&plain).as_bytes()).unwrap(), plain);

        let rich = Endpoint::new(addr("[::1]:2"))
            .with_weight(4)
            .unwrap()
            .with_label("zone", "c");
        assert_eq!(parse(encode(&rich).as_bytes()).unwrap(), rich);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes (and near-JSON text) never panic; a rejected value has a message.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                              text in "\\{\"addr\":\"[0-9.:\\[\\]a-f]{0,24}\",\"weight\":-?[0-9]{0,12}\\}") {
            for input in [&bytes[..], text.as_bytes()] {
                if let Err(e) = parse(input) {
                    proptest::prop_assert!(!e.to_string().is_empty());
                }
            }
        }

        /// What `encode` writes, `parse` reads back.
        #[test]
        fn encode_round_trips(ip in proptest::prelude::any::<[u8; 4]>(), port in 1u16.., weight in 1u32..) {
            let addr = std::net::SocketAddr::from((ip, port));
            let ep = Endpoint::new(addr).with_weight(weight).unwrap();
            let back = parse(encode(&ep).as_bytes()).unwrap();
            proptest::prop_assert_eq!(back.addr(), addr);
            proptest::prop_assert_eq!(back.weight(), weight);
        }
    }
}
