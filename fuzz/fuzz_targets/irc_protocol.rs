//! Fuzz the IRC door's input side: the message parser and the protocol's steps, before
//! and after registration. Never a panic; every line the protocol sends itself is one
//! CR LF-terminated line with no other CR, LF or NUL in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::door::irc::message::{parse, MAX_PARAMS};
use switchboard::door::irc::{IrcProtocol, IrcState};
use switchboard::door::session::{Protocol, Step};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    for line in text.split(['\r', '\n']) {
        if let Some(message) = parse(line) {
            assert!(!message.command.is_empty());
            assert!(message.params.len() <= MAX_PARAMS);
        }
    }
    let protocol = IrcProtocol::new();
    let mut state = IrcState::default();
    for registered in [false, true] {
        for line in input.split(|&byte| byte == b'\n') {
            let mut steps = Vec::new();
            protocol.on_message(&mut state, line, registered, &mut steps);
            for step in steps {
                if let Step::Send(bytes) = step {
                    assert!(bytes.ends_with(b"\r\n"));
                    let body = &bytes[..bytes.len() - 2];
                    assert!(!body.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{bytes:?}");
                }
            }
        }
    }
});
