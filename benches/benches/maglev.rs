//! Maglev table build (what a member change costs the control path) and lookup (per new flow).
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use lb_common::maglev::Table;

fn maglev(c: &mut Criterion) {
    let members: Vec<(String, u32)> = (0..10).map(|i| (format!("10.0.0.{i}:80"), 1 + i % 3)).collect();
    c.bench_function("maglev_build_10_members_65537_slots", |b| b.iter(|| Table::build(black_box(&members), 65537).unwrap()));
    let table = Table::build(&members, 65537).unwrap();
    let mut h = 0u64;
    c.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            table.lookup(black_box(h))
        })
    });
}

criterion_group!(benches, maglev);
criterion_main!(benches);
