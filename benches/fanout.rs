//! Micro-benchmark of the hub's fan-out path: one rendered `Bytes` pushed onto 1000
//! client outboxes, as a room broadcast does; reported per recipient. The outboxes are
//! drained (untimed) between iterations, with a registered waker, so every push pays
//! the lock, the byte accounting and the writer wake-up, as in the server.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::hub::{Outbox, Push};

const RECIPIENTS: usize = 1000;

fn drain(outboxes: &[Arc<Outbox>], batch: &mut VecDeque<Bytes>) {
    let mut cx = Context::from_waker(Waker::noop());
    for outbox in outboxes {
        let _ = outbox.poll_take(&mut cx, batch);
        let written: usize = batch.iter().map(Bytes::len).sum();
        outbox.written(written);
        batch.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let outboxes: Vec<Arc<Outbox>> = (0..RECIPIENTS)
        .map(|_| Arc::new(Outbox::new(1 << 20)))
        .collect();
    let rendered = Bytes::from_static(
        b"[alice] ~b3:1234:123456789~ the quick brown fox jumps over the lazy dog\n",
    );
    let mut batch = VecDeque::new();
    drain(&outboxes, &mut batch);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("push_1000_outboxes", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                for outbox in &outboxes {
                    let pushed = outbox.push(black_box(rendered.clone()));
                    debug_assert_eq!(pushed, Push::Queued);
                    black_box(pushed);
                }
                timed += started.elapsed();
                drain(&outboxes, &mut batch);
            }
            timed
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
    targets = fanout
}
criterion_main!(benches);
