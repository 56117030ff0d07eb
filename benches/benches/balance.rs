use criterion::{Criterion, black_box, criterion_group, criterion_main};
use lb_common::balance::Schedule;

fn schedule_build(c: &mut Criterion) {
    let weights: Vec<u32> = (1..=64).collect();
    c.bench_function("smooth_weighted_schedule_64_members", |b| {
        b.iter(|| Schedule::smooth_weighted(black_box(&weights)))
    });
}

criterion_group!(benches, schedule_build);
criterion_main!(benches);
