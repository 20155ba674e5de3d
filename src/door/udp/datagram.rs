//! One device datagram, parsed: pure (bytes in, a request or the reason it is dropped
//! out). A datagram is one JSON object of the JSON door's protocol plus `token` (the
//! device's) and `seq` (a number that grows with every datagram, against replays).

use serde_json::Value;

use crate::door::json::codec::{self, ClientMessage, Decoded};

/// The default and smallest size cap: below the usual path MTUs, so a device's
/// datagram is never fragmented on the way.
pub const DEFAULT_MAX_DATAGRAM_BYTES: usize = 1200;

/// Why a datagram was dropped unanswered (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Bigger than the cap.
    Oversized,
    /// Not a JSON object.
    BadJson,
    /// No `token` string.
    NoToken,
    /// A token no device has.
    BadToken,
    /// No usable `seq`, or one already seen (or too old to tell).
    Replayed,
    /// Its sender (an address without a device, or a device over its rate) sent too many.
    RateLimited,
    /// The server could not check the token just now (accounts busy or failing).
    Busy,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Oversized => "oversized",
            Dropped::BadJson => "bad_json",
            Dropped::NoToken => "no_token",
            Dropped::BadToken => "bad_token",
            Dropped::Replayed => "replayed",
            Dropped::RateLimited => "rate_limited",
            Dropped::Busy => "busy",
        }
    }
}

/// A datagram that parsed: who it claims to be, its sequence number, and what it asks.
#[derive(Debug)]
pub struct Datagram {
    pub token: String,
    /// `None`: missing or not a whole number (dropped as a replay once the token is
    /// known good: a datagram without one could be replayed forever).
    pub seq: Option<u64>,
    pub decoded: Decoded,
}

/// Parse one datagram of `len` bytes (checked against `max_bytes` first).
pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<Datagram, Dropped> {
    if bytes.len() > max_bytes {
        return Err(Dropped::Oversized);
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(Dropped::BadJson);
    };
    let token = match object.remove("token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        _ => return Err(Dropped::NoToken),
    };
    let seq = object.remove("seq").and_then(|seq| seq.as_u64());
    let decoded = codec::decode_object(object);
    Ok(Datagram {
        token,
        seq,
        decoded,
    })
}

/// What a device may ask for over UDP: chat that fits a datagram and its commands'
/// answers. Anything else (names, accounts, history pages) needs a connection.
pub fn carried_over_udp(message: &ClientMessage) -> bool {
    use crate::chat::Request;
    match message {
        ClientMessage::Nick(_) | ClientMessage::Account(_) => false,
        ClientMessage::Hub(request) => matches!(
            request,
            Request::Say { .. }
                | Request::Whisper { .. }
                | Request::Join { .. }
                | Request::Part { .. }
                | Request::Ping
                | Request::Quit { .. }
                | Request::Command { .. }
                | Request::CommandResult { .. }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Request;

    #[test]
    fn a_telemetry_datagram_parses_into_a_say() {
        let datagram = parse(
            br##"{"token":"t0k","seq":7,"type":"say","room":"#drones","data":{"alt":12.5}}"##,
            1200,
        )
        .unwrap();
        assert_eq!(datagram.token, "t0k");
        assert_eq!(datagram.seq, Some(7));
        match datagram.decoded.message.unwrap() {
            ClientMessage::Hub(Request::Say { room, data, .. }) => {
                assert_eq!(room.as_deref(), Some("#drones"));
                assert_eq!(data.unwrap()["alt"], 12.5);
            }
            other => panic!("not a say: {other:?}"),
        }
    }

    #[test]
    fn drops_say_why() {
        let big = format!(
            r#"{{"token":"t","seq":1,"type":"say","text":"{}"}}"#,
            "x".repeat(1200)
        );
        assert_eq!(parse(big.as_bytes(), 1200).unwrap_err(), Dropped::Oversized);
        assert_eq!(parse(b"{not json", 1200).unwrap_err(), Dropped::BadJson);
        assert_eq!(parse(b"[1,2]", 1200).unwrap_err(), Dropped::BadJson);
        assert_eq!(parse(b"\xff\xfe", 1200).unwrap_err(), Dropped::BadJson);
        assert_eq!(
            parse(br#"{"type":"ping","seq":1}"#, 1200).unwrap_err(),
            Dropped::NoToken
        );
        assert_eq!(
            parse(br#"{"token":5,"type":"ping","seq":1}"#, 1200).unwrap_err(),
            Dropped::NoToken
        );
        let no_seq = parse(br#"{"token":"t","type":"ping"}"#, 1200).unwrap();
        assert_eq!(no_seq.seq, None);
        let bad_seq = parse(br#"{"token":"t","type":"ping","seq":-3}"#, 1200).unwrap();
        assert_eq!(bad_seq.seq, None);
    }

    #[test]
    fn a_bad_request_inside_a_good_datagram_is_the_protocol_s_error() {
        let datagram = parse(br#"{"token":"t","seq":1,"type":"say","id":4}"#, 1200).unwrap();
        assert_eq!(datagram.decoded.tag.as_deref(), Some("4"));
        assert!(datagram.decoded.message.is_err());
    }

    #[test]
    fn only_what_fits_a_datagram_is_carried() {
        let carried = |text: &str| {
            let datagram = parse(text.as_bytes(), 1200).unwrap();
            carried_over_udp(&datagram.decoded.message.unwrap())
        };
        assert!(carried(
            r##"{"token":"t","seq":1,"type":"join","room":"#a"}"##
        ));
        assert!(carried(
            r#"{"token":"t","seq":1,"type":"command_result","id":3,"ok":true}"#
        ));
        assert!(!carried(
            r#"{"token":"t","seq":1,"type":"nick","nick":"x"}"#
        ));
        assert!(!carried(r#"{"token":"t","seq":1,"type":"history"}"#));
        assert!(!carried(r#"{"token":"t","seq":1,"type":"rooms"}"#));
    }

    #[test]
    fn any_byte_string_is_parsed_or_dropped_never_a_panic() {
        let sample = br##"{"token":"abc","seq":12,"type":"say","room":"#r","text":"hi"}"##;
        for cut in 0..=sample.len() {
            let _ = parse(&sample[..cut], 1200);
            let mut flipped = sample.to_vec();
            if cut < flipped.len() {
                flipped[cut] ^= 0x80;
            }
            let _ = parse(&flipped, 1200);
        }
    }
}
