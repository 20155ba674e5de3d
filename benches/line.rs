//! Micro-benchmarks of the line door's pure parts: the framer (bytes in, lines out)
//! and the renderer (an event to its text form, through `hub::Render`), and of what the
//! load generator does with every line it reads (the payload scanner). Small sample
//! sizes so `cargo bench --bench line -- --quick` takes seconds.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::bench::payload::{encode, Payload, Scanner};
use switchboard::door::line::framing::{Frame, LineFramer};
use switchboard::door::line::render::LineRender;
use switchboard::hub::{ChatMessage, Event, Render, Target};

/// 64 KiB of chat lines of about 80 bytes, as a busy client would send them.
fn chat_lines() -> Bytes {
    let mut text = Vec::with_capacity(64 * 1024);
    let mut n = 0;
    while text.len() < 64 * 1024 - 100 {
        text.extend_from_slice(
            format!("~b3:{n}:123456789~ the quick brown fox jumps over the lazy dog {n}\n")
                .as_bytes(),
        );
        n += 1;
    }
    Bytes::from(text)
}

fn framer(c: &mut Criterion) {
    let input = chat_lines();
    let mut group = c.benchmark_group("line_framer");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("whole_lines_64k", |b| {
        let mut framer = LineFramer::new(4096);
        let mut frames: Vec<Frame> = Vec::with_capacity(1024);
        b.iter(|| {
            framer.push(black_box(&input), &mut frames);
            black_box(frames.len());
            frames.clear();
        })
    });
    // Reads that end mid-line: every chunk leaves a partial line to carry over.
    let chunks: Vec<Bytes> = (0..input.len())
        .step_by(1000)
        .map(|start| input.slice(start..(start + 1000).min(input.len())))
        .collect();
    group.bench_function("split_lines_1000b_reads", |b| {
        let mut framer = LineFramer::new(4096);
        let mut frames: Vec<Frame> = Vec::with_capacity(1024);
        b.iter(|| {
            for chunk in &chunks {
                framer.push(black_box(chunk), &mut frames);
            }
            black_box(frames.len());
            frames.clear();
        })
    });
    group.finish();
}

fn renderer(c: &mut Criterion) {
    let render = LineRender::new("#general");
    let message = Event::Message(Arc::new(ChatMessage {
        id: 1,
        time: SystemTime::now(),
        target: Target::Room("#general".into()),
        from: "alice".into(),
        from_client: 1,
        text: "~b3:1234:123456789~ the quick brown fox jumps over the lazy dog".into(),
        data: None,
        action: false,
        notice: false,
        account: None,
    }));
    let joined = Event::Joined {
        room: "#general".into(),
        nick: "bob".into(),
        client: 2,
        account: None,
    };
    let mut group = c.benchmark_group("line_render");
    group.throughput(Throughput::Elements(1));
    group.bench_function("room_message", |b| {
        b.iter(|| black_box(render.render(black_box(&message))))
    });
    group.bench_function("join_notice", |b| {
        b.iter(|| black_box(render.render(black_box(&joined))))
    });
    group.finish();
}

/// 64 KiB of room lines as `switchboard bench` reads them from the line door: `[bN] `
/// and a 64-byte payload, 10 senders taking turns.
fn delivered_lines(run: u32) -> (Vec<u8>, u64) {
    let mut text = Vec::with_capacity(64 * 1024);
    let mut count = 0;
    while text.len() < 64 * 1024 - 100 {
        let payload = Payload {
            run,
            sender: (count % 10) as u32,
            seq: 100_000 + count / 10,
            sent_ns: 12_345_678_901 + count * 1_000,
        };
        text.extend_from_slice(format!("[b{}] ", payload.sender).as_bytes());
        encode(&payload, 64, &mut text);
        text.push(b'\n');
        count += 1;
    }
    (text, count)
}

fn scanner(c: &mut Criterion) {
    let run = 3_141_592_653;
    let (text, count) = delivered_lines(run);
    let scanner = Scanner::for_run(run);
    let mut found = Vec::with_capacity(count as usize);
    let mut group = c.benchmark_group("bench_payload_scan");
    group.throughput(Throughput::Elements(count));
    group.bench_function("line_door_64k", |b| {
        b.iter(|| {
            scanner.scan(black_box(&text), &mut found);
            assert_eq!(found.len() as u64, count);
            found.clear();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = framer, renderer, scanner
}
criterion_main!(benches);
