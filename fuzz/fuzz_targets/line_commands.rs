//! Fuzz the line-protocol command parser: any typed line gives a request, help,
//! nothing, or an explanation, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::door::line::command::{parse, LineInput};

fuzz_target!(|input: &[u8]| {
    let line = String::from_utf8_lossy(input);
    match parse(&line) {
        LineInput::Invalid(why) => assert!(!why.is_empty()),
        LineInput::Request(_) | LineInput::Help | LineInput::Nothing => {}
    }
});
