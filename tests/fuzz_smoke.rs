//! A short, seeded run of each `cargo fuzz` target's body (src/fuzzing.rs) on stable: a few
//! thousand random and mutated inputs each. Longer runs: fuzz/README.md.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const RUNS: usize = 4000;

/// Random bytes, or a seed mutated a few times (flip, insert, delete, splice, repeat).
fn input(rng: &mut StdRng, seeds: &[&[u8]]) -> Vec<u8> {
    if rng.random_bool(0.2) {
        let len = rng.random_range(0..64);
        return (0..len).map(|_| rng.random()).collect();
    }
    let mut data = seeds[rng.random_range(0..seeds.len())].to_vec();
    const SPICE: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b"/",
        b",",
        b"null",
        b"-1",
        b"1e999",
        b"18446744073709551616",
        "é".as_bytes(),
        b"\xff",
        b"\x00",
        "\u{202e}".as_bytes(),
    ];
    for _ in 0..rng.random_range(1..5) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..5) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let spice = SPICE[rng.random_range(0..SPICE.len())];
                data.splice(at..at, spice.iter().copied());
            }
            2 if at < data.len() => {
                let end = rng.random_range(at..=data.len());
                data.drain(at..end);
            }
            3 => {
                let other = seeds[rng.random_range(0..seeds.len())];
                let from = rng.random_range(0..=other.len());
                data.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let copy = data[at..].to_vec();
                data.extend_from_slice(&copy);
            }
        }
    }
    data
}

fn run(seed: u64, seeds: &[&[u8]], target: fn(&[u8])) {
    let mut rng = StdRng::seed_from_u64(seed);
    for seed in seeds {
        target(seed);
    }
    for _ in 0..RUNS {
        target(&input(&mut rng, seeds));
    }
}

#[test]
fn room_name() {
    run(
        1,
        &[
            b"global",
            b"user:alice",
            b"project:42",
            b"agent:a-1.b_2",
            b"project:a:b",
            b"\"project:1\"",
        ],
        roomcast::fuzzing::room_name,
    );
}

#[test]
fn typed_event() {
    // The first byte picks the type (index into EventType::ALL).
    run(
        2,
        &[
            b"\x00{\"project_id\": 42, \"status\": \"active\", \"changes\": {\"a\": [1, 2.5]}}",
            b"\x02{\"agent_id\": \"a1\", \"status\": \"busy\", \"project_id\": 7}",
            b"\x06{\"workflow_id\": 1, \"project_id\": 1, \"progress\": 100}",
            b"\x09{\"project_id\": 1, \"number\": 17, \"title\": \"t\", \"merged\": true}",
            b"\x0f{\"suggestion_id\": \"s\", \"content\": \"c\", \"user_id\": \"u\"}",
            b"\x11{\"title\": \"t\", \"message\": \"m\", \"severity\": \"critical\"}",
        ],
        roomcast::fuzzing::typed_event,
    );
}

#[test]
fn publish_json() {
    run(
        3,
        &[
            b"{\"type\": \"project.updated\", \"data\": {\"project_id\": \"42\"}, \"tenant\": \"acme\"}",
            b"{\"event\": \"deploy.finished\", \"rooms\": [\"project:42\", \"global\"], \"data\": {\"v\": 1}}",
            b"{\"event\": \"x\", \"room\": \"user:u\", \"volatile\": true}",
        ],
        roomcast::fuzzing::publish_json,
    );
}
