//! Chart data the renderers' tests share: a bursty two hours, and the edge cases every
//! renderer must survive.

use super::{ChartData, Point};

pub(crate) const MIB: f64 = 1024.0 * 1024.0;
/// 2026-06-28 00:12:02 UTC.
pub(crate) const T0: i64 = 1_782_605_522_000;

pub(crate) fn chart(points: Vec<Point>) -> ChartData {
    ChartData {
        title: "dispatch boot 6f1c2d9e: WORKING-SET".into(),
        memory_label: "jemalloc allocated".into(),
        points,
        floors: Vec::new(),
        peak: None,
        verdict: "WORKING-SET".into(),
    }
}

/// Two hours of 1 s samples: idle at 80 MiB, bursts of turns every 20 minutes that take
/// memory up and give it back.
pub(crate) fn bursty() -> ChartData {
    let points: Vec<Point> = (0..7200)
        .map(|i: i64| {
            let phase = i % 1200;
            let turns = if phase < 300 { (phase / 60 + 1) as f64 } else { 0.0 };
            let noise = ((i * 7919) % 13) as f64 * 0.1 * MIB;
            Point {
                ts_ms: T0 + i * 1000,
                memory_bytes: 80.0 * MIB + turns * 24.0 * MIB + noise,
                turns_in_flight: turns,
            }
        })
        .collect();
    let floors = (0..4).map(|b| (T0 + b * 1_800_000, 80.0 * MIB)).collect();
    let peak = points
        .iter()
        .max_by(|a, b| a.memory_bytes.total_cmp(&b.memory_bytes))
        .map(|p| (p.ts_ms, p.memory_bytes));
    ChartData { floors, peak, ..chart(points) }
}

pub(crate) fn edge_cases() -> Vec<ChartData> {
    let p = |i: i64, m: f64, t: f64| Point { ts_ms: T0 + i, memory_bytes: m, turns_in_flight: t };
    let weird = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, -f64::MAX, 0.0, -5.0];
    let mut cases = vec![
        chart(Vec::new()),
        chart(vec![p(0, 64.0 * MIB, 1.0)]),
        chart(vec![p(0, 64.0 * MIB, f64::NAN)]),
        chart((0..100).map(|i| p(i, 64.0 * MIB, 2.0)).collect()),
        chart((0..100).map(|i| p(i, 0.0, 0.0)).collect()),
        chart((0..100).map(|i| p(0, i as f64, f64::NAN)).collect()), // one instant
        chart((0..100).map(|i| p(i, f64::NAN, f64::NAN)).collect()),
        chart(weird.iter().enumerate().map(|(i, &v)| p(i as i64, v, v)).collect()),
        chart(vec![
            Point { ts_ms: i64::MIN, memory_bytes: 1.0, turns_in_flight: 0.0 },
            Point { ts_ms: i64::MAX, memory_bytes: 2.0, turns_in_flight: 1.0 },
        ]),
        chart((0..50).rev().map(|i| p(i * 1000, i as f64 * MIB, 1.0)).collect()), // unordered
    ];
    cases.push(ChartData {
        floors: vec![(T0, f64::NAN), (T0 + 5, 1.0), (T0 - 5, f64::INFINITY)],
        peak: Some((T0, f64::NAN)),
        ..chart(Vec::new())
    });
    cases.push(ChartData {
        floors: vec![(T0, 64.0 * MIB)],
        peak: Some((T0 + 10, 70.0 * MIB)),
        ..chart(vec![p(0, 64.0 * MIB, 1.0)])
    });
    cases
}

pub(crate) fn is_balanced(svg: &str, open: &str, close: &str) -> bool {
    svg.matches(open).count() == svg.matches(close).count()
}
