//! Airbnb Nerve registrations (what Synapse reads).

use serde_json::Value;

use super::format::{Malformed, Member, host_port, malformed, object};
use crate::discover::Endpoint;

/// Parses a Nerve registration: `host`, `port`, optional `name` (label `name`), `weight`
/// (absent or `null`: 1; 0: not serving) and `labels` (string fields become labels).
pub(crate) fn parse(bytes: &[u8]) -> Result<Member, Malformed> {
    let obj = object(bytes)?;
    let addr = host_port(&obj, "registration")?;
    let mut ep = Endpoint::new(addr);
    match obj.get("weight") {
        None | Some(Value::Null) => {}
        Some(w) => {
            let w = w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| malformed("`weight` must be an integer from 0 to 4294967295"))?;
            if w == 0 {
                return Ok(Member::NotServing("weight 0".to_owned()));
            }
            ep = ep.with_weight(w).map_err(|e| malformed(e.to_string()))?;
        }
    }
    match obj.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) => ep = ep.with_label("name", n.clone()),
        Some(_) => return Err(malformed("`name` is not a string")),
    }
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                if let Value::String(v) = v
                    && k != "name"
                {
                    ep = ep.with_label(k.clone(), v.clone());
                }
            }
        }
        Some(_) => return Err(malformed("`labels` is not an object")),
    }
    Ok(Member::Serving(ep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_name_weight_labels() {
        let json = br#"{"host":"10.1.2.3","port":8080,"name":"i-0abc","weight":3,
            "haproxy_server_options":"backup","labels":{"az":"us-east-1a","n":1}}"#;
        let Member::Serving(ep) = parse(json).unwrap() else {
            panic!()
        };
        assert_eq!(ep.addr(), "10.1.2.3:8080".parse().unwrap());
        assert_eq!(ep.weight(), 3);
        assert_eq!(ep.label("name"), Some("i-0abc"));
        assert_eq!(ep.label("az"), Some("us-east-1a"));
        assert_eq!(ep.labels().len(), 2, "only string labels are kept");

        let Member::Serving(ep) = parse(br#"{"host":"::1","port":1,"weight":null}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(ep, Endpoint::new("[::1]:1".parse().unwrap()));
    }

    #[test]
    fn weight_zero_is_drained() {
        assert_eq!(
            parse(br#"{"host":"10.0.0.1","port":1,"weight":0}"#).unwrap(),
            Member::NotServing("weight 0".to_owned())
        );
    }

    #[test]
    fn malformed_registrations_name_the_field() {
        for (bad, why) in [
            (&b"{"[..], "not JSON"),
            (b"7", "not a JSON object"),
            (br#"{"port":1}"#, "no `registration.host`"),
            (br#"{"host":"web-1","port":1}"#, "not an IP address"),
            (br#"{"host":"10.0.0.1"}"#, "no `registration.port`"),
            (br#"{"host":"10.0.0.1","port":"80"}"#, "registration.port"),
            (br#"{"host":"10.0.0.1","port":1,"weight":-1}"#, "`weight`"),
            (br#"{"host":"10.0.0.1","port":1,"weight":1.5}"#, "`weight`"),
            (br#"{"host":"10.0.0.1","port":1,"name":5}"#, "`name`"),
            (br#"{"host":"10.0.0.1","port":1,"labels":"a"}"#, "`labels`"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.0.contains(why), "{err} should mention {why}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes and near-Nerve text never panic; a rejection has a message.
        #[test]
        fn parse_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            text in r#"\{"host":"[0-9a-z.:]{0,16}","port":-?[0-9]{0,7}(,"weight":-?[0-9.]{0,12})?(,"name":"[a-z0-9-]{0,8}")?\}"#,
        ) {
            for input in [&bytes[..], text.as_bytes()] {
                match parse(input) {
                    Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
                    Ok(Member::NotServing(why)) => proptest::prop_assert_eq!(why, "weight 0"),
                    Ok(Member::Serving(ep)) => proptest::prop_assert!(ep.weight() >= 1),
                }
            }
        }

        /// A well-formed registration gives exactly its address, weight and name.
        #[test]
        fn well_formed_registrations_parse_exactly(
            ip in proptest::prelude::any::<std::net::IpAddr>(),
            port in 1u16..,
            weight in proptest::option::of(1u32..),
            name in proptest::option::of("[a-z0-9-]{1,12}"),
        ) {
            let mut json = format!(r#"{{"host":"{ip}","port":{port}"#);
            if let Some(w) = weight {
                json.push_str(&format!(r#","weight":{w}"#));
            }
            if let Some(n) = &name {
                json.push_str(&format!(r#","name":"{n}""#));
            }
            json.push('}');
            let Member::Serving(ep) = parse(json.as_bytes()).unwrap() else {
                panic!("{json} serves")
            };
            proptest::prop_assert_eq!(ep.addr(), std::net::SocketAddr::new(ip, port));
            proptest::prop_assert_eq!(ep.weight(), weight.unwrap_or(1));
            proptest::prop_assert_eq!(ep.label("name"), name.as_deref());
        }
    }
}
