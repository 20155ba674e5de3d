//! The JSON front door: the protocol in `docs/protocol.md`, one JSON object per
//! message. [`JsonProtocol`] turns objects into hub steps; it rides newline framing
//! ([`JsonFraming`]) on the JSON door over TCP, and WebSocket framing on the web door
//! (`door::web::ws`), both on the shared session driver (`door::session`).

pub mod codec;
pub mod framing;

use std::convert::Infallible;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use self::codec::{decode, sniff_id, ClientMessage};
use self::framing::{JsonFrame, JsonLineFramer};
use super::conn::NoFarewell;
use super::session::{self, Door, Framing, Notice, Protocol, SessionSettings, Step, Unit};
use super::PeerSlot;
use crate::hub::{ErrorCode, Event, HubHandle, Render, Reply, Request, Tag};
use crate::metrics::DoorMetrics;
use crate::text::NickError;

/// A door speaking the JSON protocol (over TCP lines or WebSocket).
pub type JsonDoor = Door<JsonProtocol>;

/// Build a JSON-protocol door named `name` ("json", "ws") whose events are rendered
/// by `render` (JSON lines, or WebSocket frames holding the same objects).
pub fn door(
    name: &'static str,
    hub: HubHandle,
    session: SessionSettings,
    max_message_bytes: usize,
    metrics: DoorMetrics,
    render: Arc<dyn Render>,
) -> JsonDoor {
    Door {
        name,
        hub,
        settings: session,
        render: render.clone(),
        metrics,
        protocol: JsonProtocol {
            render,
            max_message_bytes,
        },
    }
}

/// Drive one JSON-lines connection (plain or TLS) from connect to close.
pub fn drive<'door, D, S>(door: D, stream: S, peer: PeerSlot) -> impl Future<Output = ()> + 'door
where
    D: Deref<Target = JsonDoor> + 'door,
    S: AsyncRead + AsyncWrite + Unpin + 'door,
{
    let framing = JsonFraming(JsonLineFramer::new(door.protocol.max_message_bytes));
    session::drive(door, stream, peer, framing, NoFarewell)
}

/// One JSON object per line.
pub struct JsonFraming(pub JsonLineFramer);

impl From<JsonFrame> for Unit<Infallible> {
    fn from(frame: JsonFrame) -> Self {
        match frame {
            JsonFrame::Message(message) => Unit::Message(message),
            JsonFrame::TooLong { head } => Unit::TooLong { head },
        }
    }
}

impl Framing for JsonFraming {
    type Control = Infallible;

    fn push(&mut self, chunk: &Bytes, units: &mut Vec<Unit<Infallible>>) {
        self.0.push(chunk, units);
    }

    fn finish(&mut self, units: &mut Vec<Unit<Infallible>>) {
        self.0.finish(units);
    }
}

/// The JSON protocol, whatever carries it.
pub struct JsonProtocol {
    /// How this door's own replies and errors are rendered (as the hub renders its
    /// events for these clients).
    render: Arc<dyn Render>,
    /// Largest accepted message; bigger ones are refused with `line_too_long`.
    max_message_bytes: usize,
}

impl JsonProtocol {
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    fn rendered(&self, event: &Event) -> Bytes {
        self.render
            .render(event)
            .unwrap_or_else(|| Bytes::from_static(b"\n"))
    }

    fn error(&self, tag: Option<Tag>, code: ErrorCode, text: impl Into<Arc<str>>) -> Step {
        let text = text.into();
        Step::Send(self.rendered(&Event::Error {
            tag,
            code,
            text,
            about: None,
        }))
    }
}

impl Protocol for JsonProtocol {
    type State = ();

    fn on_message(&self, _: &mut (), message: &[u8], registered: bool, steps: &mut Vec<Step>) {
        let decoded = decode(message);
        let tag = decoded.tag;
        let step = match decoded.message {
            Err(refusal) => self.error(tag, refusal.code, refusal.text),
            Ok(ClientMessage::Nick(nick)) if !registered => Step::Register { tag, nick },
            Ok(ClientMessage::Nick(nick)) => Step::Request {
                tag,
                request: Request::Nick { nick },
            },
            Ok(ClientMessage::Account(step)) => Step::Account { tag, step },
            Ok(ClientMessage::Hub(request)) => Step::Request { tag, request },
        };
        steps.push(step);
    }

    /// Refused, echoing its id if one can be found in its head.
    fn on_too_long(&self, _: &mut (), head: &[u8], _registered: bool, steps: &mut Vec<Step>) {
        let max = self.max_message_bytes;
        steps.push(self.error(
            sniff_id(head),
            ErrorCode::LineTooLong,
            format!("message too long (limit {max} bytes); it was discarded"),
        ));
    }

    fn on_registered(
        &self,
        _: &mut (),
        tag: Option<Tag>,
        answer: Result<(), NickError>,
        steps: &mut Vec<Step>,
    ) {
        match answer {
            Ok(()) if tag.is_some() => steps.push(Step::Send(self.rendered(&Event::Reply {
                tag,
                reply: Reply::Done,
            }))),
            Ok(()) => {}
            Err(refusal) => {
                let code = match refusal {
                    NickError::Taken => ErrorCode::NickTaken,
                    NickError::Registered => ErrorCode::NickRegistered,
                    _ => ErrorCode::NickInvalid,
                };
                steps.push(self.error(tag, code, format!("cannot use that name: {refusal}")));
            }
        }
    }

    fn notice(&self, notice: Notice) -> Bytes {
        let (code, text) = match notice {
            Notice::SlowDown { rate } => (
                ErrorCode::Flood,
                format!("slow down: over {rate} messages per second; your messages are delayed"),
            ),
            Notice::Flooding => (ErrorCode::Flood, "disconnected for flooding".to_owned()),
            Notice::RegisterTimeout { limit } => (
                ErrorCode::NotRegistered,
                format!("no name chosen within {}s; goodbye", limit.as_secs()),
            ),
            Notice::IdleTimeout { limit } => (
                ErrorCode::BadRequest,
                format!("nothing received for {}s; goodbye", limit.as_secs()),
            ),
        };
        self.rendered(&Event::Error {
            tag: None,
            code,
            text: text.into(),
            about: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::json::codec::JsonRender;

    fn protocol() -> JsonProtocol {
        JsonProtocol {
            render: JsonRender::new(),
            max_message_bytes: 64,
        }
    }

    fn sent(step: &Step) -> serde_json::Value {
        let Step::Send(bytes) = step else {
            panic!("not output: {step:?}")
        };
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_nick_registers_first_and_renames_after() {
        let protocol = protocol();
        let mut steps = Vec::new();
        protocol.on_message(
            &mut (),
            br#"{"type":"nick","nick":"a","id":1}"#,
            false,
            &mut steps,
        );
        protocol.on_message(&mut (), br#"{"type":"nick","nick":"b"}"#, true, &mut steps);
        protocol.on_message(&mut (), b"{nope", true, &mut steps);
        assert!(matches!(&steps[0], Step::Register { tag: Some(_), nick } if nick == "a"));
        assert!(matches!(
            &steps[1],
            Step::Request { tag: None, request: Request::Nick { nick } } if nick == "b"
        ));
        assert_eq!(sent(&steps[2])["type"], "error");
    }

    #[test]
    fn answers_carry_the_request_id() {
        let protocol = protocol();
        let mut steps = Vec::new();
        protocol.on_too_long(
            &mut (),
            br#"{"id":"big","type":"say","text":"xxx"#,
            true,
            &mut steps,
        );
        let tag: Tag = "7".into();
        protocol.on_registered(&mut (), Some(tag.clone()), Ok(()), &mut steps);
        protocol.on_registered(&mut (), Some(tag), Err(NickError::Taken), &mut steps);
        assert_eq!(
            (
                sent(&steps[0])["code"].clone(),
                sent(&steps[0])["id"].clone()
            ),
            (serde_json::json!("line_too_long"), serde_json::json!("big"))
        );
        assert_eq!(sent(&steps[1]), serde_json::json!({"type": "ok", "id": 7}));
        assert_eq!(sent(&steps[2])["code"], "nick_taken");
    }
}
