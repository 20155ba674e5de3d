//! Micro-benchmarks of the fan-out path, reported per recipient:
//! - `push_1000_outboxes`: one rendered `Bytes` pushed onto 1000 client outboxes, as the
//!   hub does for each member at a flush. The outboxes are drained (untimed) between
//!   iterations, with a registered waker, so every push pays the lock, the byte
//!   accounting and the writer wake-up.
//! - `hub_round_16_messages_1000_members`: the real hub (line rendering, room batch,
//!   seal, wake slices) fed 16 messages for a room of 1000, timed until every member's
//!   outbox has been taken as its writer would; per delivery (16,000 per iteration).
//! - `join_storm_10000_members`: 10,000 clients connect and register into one room,
//!   each join announced to those already there; timed until the last registration is
//!   answered; per join.
//! - `leave_storm_10000_members`: every member of a room of 10,000 disconnects, in a
//!   shuffled order, each leave announced to those still there; timed until the hub has
//!   closed every outbox; per leave.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::door::line::render::LineRender;
use switchboard::hub::{
    self, ClientId, CloseReason, Command, Connection, HistoryBackend, HubConfig, HubHandle, Outbox,
    Push, Request,
};
use switchboard::outbox::Take;

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

const ROUND_MESSAGES: usize = 16;

/// Stop a hub a bench made.
fn shut_down(runtime: &tokio::runtime::Runtime, handle: &HubHandle) {
    runtime.block_on(async {
        let _ = handle.send(Command::Shutdown).await;
    });
}

/// A hub with `members` registered line clients in its default room; client ids are
/// 1 to `members`, in join order.
async fn hub_with_room(
    tracker: &tokio_util::task::TaskTracker,
    members: usize,
) -> (HubHandle, Vec<Arc<Outbox>>) {
    let config = HubConfig {
        replay: 0,
        ..HubConfig::default()
    };
    let handle = hub::spawn(config.clone(), HistoryBackend::Memory, tracker).unwrap();
    let render = LineRender::new(&config.default_room);
    let mut outboxes = Vec::new();
    for n in 0..members {
        let client = handle.next_client_id();
        let outbox = Arc::new(Outbox::new(1 << 24));
        handle
            .send(Command::Connect(Box::new(Connection {
                client,
                peer: "127.0.0.1:1".parse().unwrap(),
                door: "bench",
                outbox: outbox.clone(),
                render: render.clone(),
            })))
            .await
            .unwrap();
        handle
            .register(client, format!("member{n}"))
            .await
            .unwrap()
            .unwrap();
        outboxes.push(outbox);
    }
    (handle, outboxes)
}

/// Take what is queued on every outbox still owed lines, as the writers would; true
/// once every outbox has had all it was owed.
fn take_lines(outboxes: &[Arc<Outbox>], owed: &mut [usize], batch: &mut VecDeque<Bytes>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = true;
    for (outbox, owed) in outboxes.iter().zip(owed.iter_mut()) {
        if *owed == 0 {
            continue;
        }
        if let std::task::Poll::Ready(Take::Data) = outbox.poll_take(&mut cx, batch) {
            let lines: usize = batch
                .iter()
                .map(|bytes| memchr::memchr_iter(b'\n', bytes).count())
                .sum();
            let written: usize = batch.iter().map(Bytes::len).sum();
            outbox.written(written);
            batch.clear();
            *owed = owed.saturating_sub(lines);
        }
        done &= *owed == 0;
    }
    done
}

fn hub_round(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let (handle, outboxes) = runtime.block_on(hub_with_room(&tracker, RECIPIENTS));
    let sender: ClientId = 1;
    let mut batch = VecDeque::new();
    // The join notices out of the way.
    std::thread::sleep(Duration::from_millis(200));
    drain(&outboxes, &mut batch);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements((RECIPIENTS * ROUND_MESSAGES) as u64));
    group.bench_function("hub_round_16_messages_1000_members", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                runtime.block_on(async {
                    for n in 0..ROUND_MESSAGES {
                        let say = Request::Say {
                            room: None,
                            text: format!(
                                "~b3:1234:{n}~ the quick brown fox jumps over the lazy dog"
                            ),
                            data: None,
                            action: false,
                        };
                        let command = Command::Request {
                            client: sender,
                            tag: None,
                            request: say,
                        };
                        handle.send(command).await.unwrap();
                    }
                });
                let mut owed = vec![ROUND_MESSAGES; RECIPIENTS];
                while !take_lines(&outboxes, &mut owed, &mut batch) {
                    std::thread::yield_now();
                }
            }
            started.elapsed()
        })
    });
    group.finish();
    shut_down(&runtime, &handle);
}

const STORM_MEMBERS: usize = 10_000;

/// Join and leave storms in one room of `STORM_MEMBERS`.
fn storms(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    // A fixed shuffle: a stride coprime to the room size visits every member once.
    let order: Vec<usize> = (0..STORM_MEMBERS)
        .map(|n| (n * 7919) % STORM_MEMBERS)
        .collect();
    let mut group = c.benchmark_group("hub");
    group.sample_size(10);
    group.throughput(Throughput::Elements(STORM_MEMBERS as u64));
    group.bench_function("join_storm_10000_members", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let (handle, _outboxes) = runtime.block_on(hub_with_room(&tracker, STORM_MEMBERS));
                timed += started.elapsed();
                shut_down(&runtime, &handle);
            }
            timed
        })
    });
    group.bench_function("leave_storm_10000_members", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let (handle, outboxes) = runtime.block_on(hub_with_room(&tracker, STORM_MEMBERS));
                let started = Instant::now();
                runtime.block_on(async {
                    for &index in &order {
                        let client = index as ClientId + 1;
                        handle
                            .disconnect(client, CloseReason::PeerReset)
                            .await
                            .unwrap();
                    }
                });
                let last = &outboxes[*order.last().unwrap()];
                while last.close_reason().is_none() {
                    std::thread::yield_now();
                }
                timed += started.elapsed();
                shut_down(&runtime, &handle);
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
    targets = fanout, hub_round, storms
}
criterion_main!(benches);
