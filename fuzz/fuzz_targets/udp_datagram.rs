//! Fuzz the UDP door's input side: any datagram parses into a request (or the
//! protocol's refusal) with its token, or is dropped with a reason; never a panic.
//! The replay window, fed the bytes as sequence numbers, accepts no number twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::door::udp::datagram::{parse, DEFAULT_MAX_DATAGRAM_BYTES};
use switchboard::door::udp::replay::ReplayWindow;

fuzz_target!(|input: &[u8]| {
    if let Ok(datagram) = parse(input, DEFAULT_MAX_DATAGRAM_BYTES) {
        assert!(!datagram.token.is_empty());
        if let Err(refusal) = datagram.decoded.message {
            assert!(!refusal.text.is_empty());
        }
    }
    let mut window = ReplayWindow::default();
    let mut accepted = std::collections::HashSet::new();
    for pair in input.chunks(2) {
        let seq = u64::from(pair[0]) * 4 + u64::from(*pair.get(1).unwrap_or(&0) % 4);
        if window.accept(seq) {
            assert!(accepted.insert(seq), "{seq} accepted twice");
        }
    }
});
