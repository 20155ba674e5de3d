//! Fuzz the line framer: arbitrary bytes, split at arbitrary points, with bursts
//! ending at arbitrary moments. Checks the framer never panics, never holds more than
//! the cap, never emits an over-long line, and that the split points do not change
//! the lines a newline-framed client gets.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::door::line::framing::{Frame, LineFramer};

const MAX: usize = 64;

fn frames_of(chunks: &[&[u8]], burst_after: &[bool]) -> Vec<Frame> {
    let mut framer = LineFramer::new(MAX);
    let mut out = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        framer.push(&Bytes::copy_from_slice(chunk), &mut out);
        assert!(
            framer.buffered_bytes() <= MAX + 1,
            "framer holds {} bytes",
            framer.buffered_bytes()
        );
        if burst_after.get(index).copied().unwrap_or(false) {
            framer.end_burst(&mut out);
        }
    }
    framer.finish(&mut out);
    for frame in &out {
        if let Frame::Line(line) = frame {
            assert!(line.len() <= MAX, "emitted a line of {} bytes", line.len());
            assert!(!line.contains(&b'\n'), "a line contains a newline");
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    // Split the data into chunks at points derived from the control byte.
    let step = usize::from(control % 16) + 1;
    let chunks: Vec<&[u8]> = data.chunks(step).collect();
    let bursts: Vec<bool> = (0..chunks.len())
        .map(|i| (control >> 4) != 0 && i % usize::from(control >> 4).max(1) == 0)
        .collect();
    let split = frames_of(&chunks, &bursts);
    // A client that sends a newline first is line-framed: no burst timing may change
    // what it gets, whatever the chunking.
    if data.first() == Some(&b'\n') {
        let whole = frames_of(&[data], &[true]);
        assert_eq!(
            split, whole,
            "chunking changed the lines of a framed client"
        );
    }
});
