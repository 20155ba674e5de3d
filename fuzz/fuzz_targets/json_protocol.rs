//! Fuzz the JSON door's input side: line framing (split at arbitrary points must not
//! change the frames), message decoding, and id sniffing in over-long messages. Every
//! decoded message is a request or a refusal with a code, never a panic; every
//! rendered reply is one line of valid JSON.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::door::json::codec::{decode, sniff_id};
use switchboard::door::json::framing::{JsonFrame, JsonLineFramer};

const MAX: usize = 256;

fn frames(chunks: &[&[u8]]) -> Vec<JsonFrame> {
    let mut framer = JsonLineFramer::new(MAX);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(&Bytes::copy_from_slice(chunk), &mut out);
    }
    framer.finish(&mut out);
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let step = usize::from(control % 32) + 1;
    let split: Vec<&[u8]> = data.chunks(step).collect();
    let framed = frames(&split);
    assert_eq!(framed, frames(&[data]), "chunking changed the frames");
    for frame in framed {
        match frame {
            JsonFrame::Message(bytes) => {
                assert!(bytes.len() <= MAX);
                let decoded = decode(&bytes);
                if let Err(refusal) = decoded.message {
                    assert!(!refusal.text.is_empty());
                }
            }
            JsonFrame::TooLong { head } => {
                let _ = sniff_id(&head);
            }
        }
    }
});
