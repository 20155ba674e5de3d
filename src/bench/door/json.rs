//! Switchboard's JSON protocol as the bench speaks it (register with a `nick` request
//! and wait for its `ok`; send each payload as the text of a `say`), and the JSON door
//! over TCP, one object per line. The WebSocket adapter ([`super::ws`]) sends the same
//! messages, one per text frame.

use std::io;
use std::net::SocketAddr;

use super::tcp::TcpWriting;
use super::{Door, Registration, Step};

/// The request id registration waits on: the `ok` or `error` carrying it settles it,
/// whatever else (welcome, joined, history replay) arrives first.
const REGISTER_ID: &str = "register";

/// Asks to leave over TCP; the server tells the room and closes.
const QUIT_LINE: &[u8] = concat!(r#"{"type":"quit"}"#, "\n").as_bytes();

/// The request that registers `nick` (no newline).
pub fn register_request(nick: &str) -> String {
    serde_json::json!({"type": "nick", "nick": nick, "id": REGISTER_ID}).to_string()
}

/// What one received message says about registration: `None` when it is not the
/// answer to [`register_request`], else whether the server accepted it.
pub fn registration_outcome(message: &[u8]) -> Option<io::Result<()>> {
    let message: serde_json::Value = serde_json::from_slice(message).ok()?;
    if message.get("id")?.as_str()? != REGISTER_ID {
        return None;
    }
    match message.get("type")?.as_str()? {
        "ok" => Some(Ok(())),
        "error" => Some(Err(io::Error::other(format!(
            "registration refused: {} ({})",
            message["text"].as_str().unwrap_or("no reason given"),
            message["code"].as_str().unwrap_or("no code"),
        )))),
        _ => None,
    }
}

/// Look through the whole lines of `buffer` from `*scanned` on for the answer to
/// [`register_request`]; returns the offset just past its line once it is there.
fn registration_in_lines(buffer: &[u8], scanned: &mut usize) -> Option<io::Result<usize>> {
    while let Some(newline) = memchr::memchr(b'\n', &buffer[*scanned..]) {
        let line = &buffer[*scanned..*scanned + newline];
        *scanned += newline + 1;
        if let Some(outcome) = registration_outcome(line) {
            return Some(outcome.map(|()| *scanned));
        }
    }
    None
}

/// Append `payload` as the text of a `say` request to the current room (no newline).
pub fn push_say(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"type":"say","text":""#);
    push_escaped(payload, out);
    out.extend_from_slice(br#""}"#);
}

/// Append `text` escaped for the inside of a JSON string. Bench payloads are plain
/// ASCII and need none of it; the escaping keeps any other text valid JSON too.
fn push_escaped(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            0x00..=0x1f => {
                out.extend_from_slice(br"\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
}

/// Switchboard's JSON door over TCP (`--json`).
pub struct JsonTcpDoor;

impl Door for JsonTcpDoor {
    fn name(&self) -> &'static str {
        "json"
    }

    fn echoes(&self) -> bool {
        true
    }

    fn registration(&self, _addr: SocketAddr, nick: &str) -> Box<dyn Registration> {
        let mut request = register_request(nick).into_bytes();
        request.push(b'\n');
        Box::new(JsonRegistration {
            request: Some(request),
            scanned: 0,
        })
    }

    fn writing(&self) -> TcpWriting {
        TcpWriting {
            frame: |payload, out| {
                push_say(payload, out);
                out.push(b'\n');
            },
            farewell: QUIT_LINE,
            may_reset: true,
        }
    }
}

/// Registration over the JSON door: send the request, then wait for its answer.
struct JsonRegistration {
    /// Taken when sent.
    request: Option<Vec<u8>>,
    scanned: usize,
}

impl Registration for JsonRegistration {
    fn step(&mut self, received: &[u8]) -> io::Result<Step> {
        if let Some(request) = self.request.take() {
            return Ok(Step::Send(request));
        }
        match registration_in_lines(received, &mut self.scanned) {
            Some(outcome) => outcome.map(Step::Registered),
            None => Ok(Step::Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::door::testing::{assert_refused, assert_registers};

    #[test]
    fn say_carries_the_payload_as_its_text() {
        for text in [
            &b"~b1:2:3:4~...."[..],
            b"",
            b"quote \" backslash \\ newline \n tab \t nul \0 unit \x1f",
            "non-ASCII: é 漢".as_bytes(),
        ] {
            let mut out = b"junk".to_vec();
            push_say(text, &mut out);
            let say: serde_json::Value = serde_json::from_slice(&out[4..]).unwrap();
            assert_eq!(say["type"], "say");
            assert_eq!(say["text"].as_str().unwrap().as_bytes(), text);
            assert!(!out.contains(&b'\n'), "one request per line");
        }
    }

    #[test]
    fn register_request_names_the_nick_and_the_id_waited_on() {
        let request: serde_json::Value =
            serde_json::from_str(&register_request("b12ab_7")).unwrap();
        assert_eq!(request["type"], "nick");
        assert_eq!(request["nick"], "b12ab_7");
        assert_eq!(request["id"], REGISTER_ID);
    }

    #[test]
    fn only_the_answer_to_the_register_request_settles_it() {
        for unrelated in [
            &br#"{"type":"welcome","client":7,"nick":"a","protocol":1}"#[..],
            br##"{"type":"joined","room":"#general","nick":"a","client":7}"##,
            br#"{"type":"ok","id":"other"}"#,
            br#"{"type":"ok","id":1}"#,
            br#"{"type":"error","code":"flood","text":"slow down"}"#,
            br#"{"type":"history","replay":true,"messages":[{"id":"register"}]}"#,
            b"not json",
            b"[1,2]",
        ] {
            assert!(
                registration_outcome(unrelated).is_none(),
                "{}",
                String::from_utf8_lossy(unrelated)
            );
        }
        assert!(matches!(
            registration_outcome(br#"{"type":"ok","id":"register"}"#),
            Some(Ok(()))
        ));
        let refused = registration_outcome(
            br#"{"type":"error","id":"register","code":"nick_taken","text":"taken"}"#,
        )
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("nick_taken") && refused.contains("taken"),
            "{refused}"
        );
    }

    #[test]
    fn registration_is_found_however_the_lines_arrive() {
        let stream = b"{\"type\":\"welcome\",\"nick\":\"a\"}\r\n\
                       {\"type\":\"joined\",\"nick\":\"a\"}\n\
                       {\"type\":\"ok\",\"id\":\"register\"}\n\
                       {\"type\":\"message\",\"text\":\"~b1:0:0:1~\"}\n";
        let end_of_ok = memchr::memmem::find(stream, b"register\"}\n").unwrap() + 11;
        for cut in 0..=stream.len() {
            let mut scanned = 0;
            let settled = match registration_in_lines(&stream[..cut], &mut scanned) {
                Some(early) => {
                    assert!(cut >= end_of_ok, "settled early at cut {cut}");
                    early
                }
                None => registration_in_lines(stream, &mut scanned).unwrap(),
            };
            assert_eq!(settled.unwrap(), end_of_ok, "cut at {cut}");
        }
    }

    #[test]
    fn registration_sends_the_request_and_waits_for_its_answer() {
        let make = || JsonTcpDoor.registration("127.0.0.1:9998".parse().unwrap(), "b1_0");
        let mut request = register_request("b1_0").into_bytes();
        request.push(b'\n');
        let transcript = b"{\"type\":\"welcome\",\"nick\":\"b1_0\"}\n\
                           {\"type\":\"ok\",\"id\":\"register\"}\n\
                           {\"type\":\"message\",\"text\":\"~b1:0:0:1~\"}\n";
        let end = memchr::memmem::find(transcript, b"register\"}\n").unwrap() + 11;
        assert_registers(make, transcript, &[&request], end);
        let refusal = b"{\"type\":\"error\",\"id\":\"register\",\"code\":\"nick_taken\",\"text\":\"taken\"}\n";
        assert_refused(make, refusal, "nick_taken");
    }
}
