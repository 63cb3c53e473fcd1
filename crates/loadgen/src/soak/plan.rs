//! What the soak sends and what each request must get back: the keys a verifying connection
//! owns, the value stored under a key at each version (length, flags and bytes all derived from
//! a seed, so no value is kept in memory), the denied keys and sentinels, and the mix of allowed
//! and denied requests. It builds requests and their expectations; it does no I/O and does not
//! judge replies (that is `check`'s).

use crate::load::Random;
use crate::memcache::{binary, protocol};

/// The prefix the policy lets the soak's identity write and read.
pub(super) const ALLOWED_PREFIX: &str = "alliance/fleet/soak";
/// Sentinels: seeded directly in memcached, deleted and read through the proxy only by requests
/// the policy denies.
pub(super) const SENTINELS: u32 = 32;
/// Denied sets go to this many keys per connection and kind, so the final check can look at
/// every one of them.
pub(super) const DENIED_KEYS: u32 = 64;
/// A value this long is the longest the soak writes (memcached and the proxy take 1 MiB).
pub(super) const MAX_VALUE: usize = 1 << 20;

/// The name of key `key` of verifying connection `connection`.
pub(super) fn allowed_key(connection: u32, key: u32) -> String {
    format!("{ALLOWED_PREFIX}/{connection}/{key}")
}

/// Shelf keys: allowed keys seeded directly in memcached that only the reading identity reads
/// through the proxy, and that its denied sets and deletes must leave alone.
pub(super) const SHELF: u32 = 64;

/// The name of shelf key `n`.
pub(super) fn shelf_key(n: u32) -> String {
    format!("alliance/fleet/shelf/{n}")
}

/// The seed of shelf key `n`'s value.
pub(super) fn shelf_seed(n: u32) -> u64 {
    mix(0x54E1_F000_0000_0000 | u64::from(n))
}

/// The name of sentinel `n`.
pub(super) fn sentinel_key(n: u32) -> String {
    format!("empire/sentinel/{n}")
}

/// The denied keys a connection may set: under a prefix no rule names, and under one that shares
/// all but its last character with the allowed prefix.
pub(super) fn denied_keys(connection: u32) -> impl Iterator<Item = String> {
    (0..DENIED_KEYS).flat_map(move |n| {
        [
            format!("empire/plans/{connection}/{n}"),
            format!("alliance/fleet-secrets/{connection}/{n}"),
        ]
    })
}

/// The seed of the value stored under `key` of `connection` at `version`.
pub(super) fn value_seed(connection: u32, key: u32, version: u32) -> u64 {
    mix((u64::from(connection) << 48) ^ (u64::from(key) << 24) ^ u64::from(version))
}

/// The seed of sentinel `n`'s value.
pub(super) fn sentinel_seed(n: u32) -> u64 {
    mix(0x5E47_1AE1_0000_0000 | u64::from(n))
}

/// splitmix64's finaliser: spreads nearby inputs over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The length of the value with `seed`: 70% up to 255 bytes (empty ones included), 28% up to
/// 8 KiB, 2% up to 128 KiB and one in 2,000 up to 1 MiB (one in 10,000 exactly 1 MiB).
pub(super) fn value_len(seed: u64) -> usize {
    let pick = seed % 10_000;
    let spread = (seed >> 20) as usize;
    match pick {
        0 => MAX_VALUE,
        1..=4 => (128 << 10) + spread % (MAX_VALUE - (128 << 10)),
        5..=204 => (8 << 10) + spread % (120 << 10),
        205..=2_999 => 256 + spread % ((8 << 10) - 256),
        _ => spread % 256,
    }
}

/// The flags stored with the value with `seed`.
pub(super) fn value_flags(seed: u64) -> u32 {
    (seed >> 32) as u32
}

/// Byte runs that would end or restart a reply if a proxy framed values by their content; one
/// value in eight carries one of them.
const TRAPS: [&[u8]; 5] = [
    b"\r\nEND\r\n",
    b"\r\nVALUE alliance/fleet/soak/0/0 0 5\r\n",
    b"\r\nVA 5 f0\r\n",
    b"\r\nCLIENT_ERROR access denied\r\n",
    b"\x81\x00\x00\x00\x04\x00\x00\x08",
];

/// Writes the value with `seed` into `out` (replacing what it held): bytes of every value, and
/// now and then a run that looks like a reply.
pub(super) fn fill_value(seed: u64, out: &mut Vec<u8>) {
    let len = value_len(seed);
    out.clear();
    out.reserve(len);
    let mut state = seed | 1;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        out.extend_from_slice(&bytes[..bytes.len().min(len - out.len())]);
    }
    if seed & 7 == 0 {
        let trap = TRAPS[(seed >> 8) as usize % TRAPS.len()];
        if trap.len() <= len {
            let at = (seed >> 12) as usize % (len - trap.len() + 1);
            out[at..at + trap.len()].copy_from_slice(trap);
        }
    }
}

/// How a request is written, and how its reply is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// Classic text commands: `set`, `get`, `delete`.
    Classic,
    /// Meta commands: `ms`, `mg`, `md`, `mn`.
    Meta,
    /// The binary protocol; a response carries the request's opcode and opaque.
    Binary { opcode: u8, opaque: u32 },
}

/// What the reply to one request must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// The value was stored.
    Stored(Style),
    /// The values of `keys` (each with its value's seed, `None` when it must be absent), in one
    /// reply; classic gets may name several keys, the others one.
    Get {
        style: Style,
        keys: Vec<(String, Option<u64>)>,
    },
    /// The key was deleted (`existed`) or was not there.
    Deleted { style: Style, existed: bool },
    /// The policy's denial.
    Denied(Style),
    /// The answer to `mn` or NOOP, which ends a run of quiet requests: nothing may come before.
    Noop(Style),
}

impl Expect {
    /// Whether the request was one the policy denies.
    pub(super) fn is_denied(&self) -> bool {
        matches!(self, Expect::Denied(_))
    }
}

/// A verifying connection's view of its keys: which version each holds (`None`: absent), and
/// the next version to write.
pub(super) struct Keys {
    pub connection: u32,
    pub versions: Vec<Option<u32>>,
    next_version: u32,
}

impl Keys {
    pub(super) fn new(connection: u32, keys: u32) -> Keys {
        Keys {
            connection,
            versions: vec![None; keys as usize],
            next_version: 0,
        }
    }

    /// The seed of the value `key` holds now, if it holds one.
    pub(super) fn seed(&self, key: u32) -> Option<u64> {
        self.versions[key as usize].map(|version| value_seed(self.connection, key, version))
    }

    /// Records a new version of `key` and returns its value's seed.
    fn write(&mut self, key: u32) -> u64 {
        let version = self.next_version;
        self.next_version = self.next_version.wrapping_add(1);
        self.versions[key as usize] = Some(version);
        value_seed(self.connection, key, version)
    }
}

/// What a verifying connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The writing identity, in text and meta commands, on keys of its own.
    Text,
    /// The writing identity, in the binary protocol, on keys of its own.
    Binary,
    /// The identity that may only read: it reads the shelf, and its sets and deletes of the
    /// shelf and of the writers' keys (`writers` connections of `keys` keys) are denied.
    Reader { writers: u32, keys: u32 },
}

/// Writes requests for one verifying connection, and what their replies must be.
pub(super) struct Planner {
    pub keys: Keys,
    role: Role,
    random: Random,
    opaque: u32,
    value: Vec<u8>,
}

/// What one step of the mix sent: one request, or a run of quiet requests ended by `mn` or NOOP.
#[derive(Debug)]
pub(super) struct Step {
    /// The replies that must come, in order.
    pub expects: Vec<Expect>,
    /// Requests sent that get no reply when they succeed (quiet sets) or at all (`noreply`):
    /// allowed ones, and denied ones.
    pub silent_allowed: u32,
    pub silent_denied: u32,
}

impl Step {
    fn one(expect: Expect) -> Step {
        Step {
            expects: vec![expect],
            silent_allowed: 0,
            silent_denied: 0,
        }
    }
}

impl Planner {
    /// A planner for connection `connection`, owning `keys` keys unless it is a reader.
    pub(super) fn new(connection: u32, keys: u32, role: Role, seed: u64) -> Planner {
        let own_keys = match role {
            Role::Reader { .. } => 0,
            Role::Text | Role::Binary => keys,
        };
        Planner {
            keys: Keys::new(connection, own_keys),
            role,
            random: Random(seed | 1),
            opaque: 0,
            value: Vec::new(),
        }
    }

    /// Appends the next step's requests to `out` and returns what their replies must be, in
    /// order. About one request in seven of the writers is denied, and half the reader's.
    pub(super) fn next(&mut self, out: &mut Vec<u8>) -> Step {
        let roll = self.random.below(100);
        match self.role {
            Role::Text => self.text_step(roll, out),
            Role::Binary => self.binary_step(roll, out),
            Role::Reader { writers, keys } => self.reader_step(roll, writers, keys, out),
        }
    }

    fn reader_step(&mut self, roll: u32, writers: u32, keys: u32, out: &mut Vec<u8>) -> Step {
        use Style::{Classic, Meta};
        let shelf = self.random.below(SHELF);
        let shelf_name = shelf_key(shelf);
        let writer_key = allowed_key(self.random.below(writers), self.random.below(keys));
        match roll {
            0..=29 => {
                let count = 1 + self.random.below(3);
                let keys: Vec<_> = (0..count)
                    .map(|_| {
                        let n = self.random.below(SHELF);
                        (shelf_key(n), Some(shelf_seed(n)))
                    })
                    .collect();
                protocol::encode_get_keys(out, keys.iter().map(|(name, _)| name.as_str()));
                Step::one(Expect::Get {
                    style: Classic,
                    keys,
                })
            }
            30..=49 => {
                protocol::encode_meta_get(out, &shelf_name);
                Step::one(Expect::Get {
                    style: Meta,
                    keys: vec![(shelf_name, Some(shelf_seed(shelf)))],
                })
            }
            50..=64 => {
                let value = self.denied_value();
                protocol::encode_set_key(out, &shelf_name, 0, &value, false);
                Step::one(Expect::Denied(Classic))
            }
            65..=74 => {
                let value = self.denied_value();
                protocol::encode_meta_set(out, &writer_key, 0, &value, false);
                Step::one(Expect::Denied(Meta))
            }
            75..=84 => {
                protocol::encode_delete(out, &shelf_name);
                Step::one(Expect::Denied(Classic))
            }
            85..=94 => {
                protocol::encode_meta_delete(out, &writer_key);
                Step::one(Expect::Denied(Meta))
            }
            _ => {
                let value = self.denied_value();
                protocol::encode_set_key(out, &writer_key, 0, &value, true);
                protocol::encode_meta_noop(out);
                Step {
                    silent_denied: 1,
                    ..Step::one(Expect::Noop(Meta))
                }
            }
        }
    }

    fn pick_key(&mut self) -> u32 {
        self.random.below(self.keys.versions.len() as u32)
    }

    fn pick_sentinel(&mut self) -> String {
        sentinel_key(self.random.below(SENTINELS))
    }

    fn pick_denied(&mut self) -> String {
        let n = self.random.below(DENIED_KEYS * 2);
        denied_keys(self.keys.connection)
            .nth(n as usize)
            .expect("n is below the count")
    }

    /// The distinctive value a denied set carries, of a varied length.
    fn denied_value(&mut self) -> Vec<u8> {
        let len = [0, 10, 300, 5000, 70_000][self.random.below(5) as usize];
        b"DENIED-SOAK-VALUE-"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    /// A new value for `key`: its name, flags and (in `self.value`) bytes.
    fn new_value(&mut self, key: u32) -> (String, u32) {
        let seed = self.keys.write(key);
        fill_value(seed, &mut self.value);
        (allowed_key(self.keys.connection, key), value_flags(seed))
    }

    fn get_of(&self, key: u32) -> (String, Option<u64>) {
        (allowed_key(self.keys.connection, key), self.keys.seed(key))
    }

    fn text_step(&mut self, roll: u32, out: &mut Vec<u8>) -> Step {
        use Style::{Classic, Meta};
        match roll {
            0..=13 => {
                let key = self.pick_key();
                let (name, flags) = self.new_value(key);
                protocol::encode_set_key(out, &name, flags, &self.value, false);
                Step::one(Expect::Stored(Classic))
            }
            14..=21 => {
                let key = self.pick_key();
                let (name, flags) = self.new_value(key);
                protocol::encode_meta_set(out, &name, flags, &self.value, false);
                Step::one(Expect::Stored(Meta))
            }
            22..=25 => {
                // A run of quiet meta sets: only the `mn` is answered. Half the runs end with a
                // denied delete, whose denial the proxy must hold until the server has answered
                // what came before it.
                let sets = 1 + self.random.below(4);
                for _ in 0..sets {
                    let key = self.pick_key();
                    let (name, flags) = self.new_value(key);
                    protocol::encode_meta_set(out, &name, flags, &self.value, true);
                }
                let mut expects = Vec::new();
                if self.random.below(2) == 0 {
                    let name = self.pick_sentinel();
                    protocol::encode_meta_delete(out, &name);
                    expects.push(Expect::Denied(Meta));
                }
                protocol::encode_meta_noop(out);
                expects.push(Expect::Noop(Meta));
                Step {
                    expects,
                    silent_allowed: sets,
                    silent_denied: 0,
                }
            }
            26..=45 => {
                let key = self.pick_key();
                let get = self.get_of(key);
                protocol::encode_get_keys(out, [get.0.as_str()]);
                Step::one(Expect::Get {
                    style: Classic,
                    keys: vec![get],
                })
            }
            46..=59 => {
                let key = self.pick_key();
                let get = self.get_of(key);
                protocol::encode_meta_get(out, &get.0);
                Step::one(Expect::Get {
                    style: Meta,
                    keys: vec![get],
                })
            }
            60..=67 => {
                let count = 2 + self.random.below(4);
                let keys: Vec<_> = (0..count)
                    .map(|_| {
                        let key = self.pick_key();
                        self.get_of(key)
                    })
                    .collect();
                protocol::encode_get_keys(out, keys.iter().map(|(name, _)| name.as_str()));
                Step::one(Expect::Get {
                    style: Classic,
                    keys,
                })
            }
            68..=71 => {
                let key = self.pick_key();
                let existed = self.keys.versions[key as usize].take().is_some();
                let name = allowed_key(self.keys.connection, key);
                if roll < 70 {
                    protocol::encode_delete(out, &name);
                    Step::one(Expect::Deleted {
                        style: Classic,
                        existed,
                    })
                } else {
                    protocol::encode_meta_delete(out, &name);
                    Step::one(Expect::Deleted {
                        style: Meta,
                        existed,
                    })
                }
            }
            72..=74 => {
                let name = self.pick_denied();
                let value = self.denied_value();
                protocol::encode_set_key(out, &name, 0, &value, false);
                Step::one(Expect::Denied(Classic))
            }
            75..=76 => {
                let name = self.pick_denied();
                let value = self.denied_value();
                protocol::encode_meta_set(out, &name, 0, &value, false);
                Step::one(Expect::Denied(Meta))
            }
            77 => {
                // `noreply` gets no denial; the `mn` after it shows nothing else came.
                let name = self.pick_denied();
                let value = self.denied_value();
                protocol::encode_set_key(out, &name, 0, &value, true);
                protocol::encode_meta_noop(out);
                Step {
                    silent_denied: 1,
                    ..Step::one(Expect::Noop(Meta))
                }
            }
            78 => {
                // A quiet meta set that is denied is answered all the same, before the `mn`.
                let name = self.pick_denied();
                let value = self.denied_value();
                protocol::encode_meta_set(out, &name, 0, &value, true);
                protocol::encode_meta_noop(out);
                Step {
                    expects: vec![Expect::Denied(Meta), Expect::Noop(Meta)],
                    silent_allowed: 0,
                    silent_denied: 0,
                }
            }
            79..=81 => {
                let name = self.pick_sentinel();
                protocol::encode_delete(out, &name);
                Step::one(Expect::Denied(Classic))
            }
            82..=83 => {
                let name = self.pick_sentinel();
                protocol::encode_meta_delete(out, &name);
                Step::one(Expect::Denied(Meta))
            }
            84..=85 => {
                let name = self.pick_sentinel();
                protocol::encode_get_keys(out, [name.as_str()]);
                Step::one(Expect::Denied(Classic))
            }
            86 => {
                let name = self.pick_sentinel();
                protocol::encode_meta_get(out, &name);
                Step::one(Expect::Denied(Meta))
            }
            87 => {
                // One denied key denies the whole retrieval.
                let key = self.pick_key();
                let (allowed, _) = self.get_of(key);
                let sentinel = self.pick_sentinel();
                protocol::encode_get_keys(out, [allowed.as_str(), sentinel.as_str()]);
                Step::one(Expect::Denied(Classic))
            }
            _ => {
                let key = self.pick_key();
                let get = self.get_of(key);
                protocol::encode_get_keys(out, [get.0.as_str()]);
                Step::one(Expect::Get {
                    style: Classic,
                    keys: vec![get],
                })
            }
        }
    }

    fn binary(&mut self, opcode: u8) -> Style {
        self.opaque = self.opaque.wrapping_add(1);
        Style::Binary {
            opcode,
            opaque: self.opaque,
        }
    }

    fn binary_step(&mut self, roll: u32, out: &mut Vec<u8>) -> Step {
        match roll {
            0..=24 => {
                let style = self.binary(binary::SET);
                let key = self.pick_key();
                let (name, flags) = self.new_value(key);
                binary::encode_set(
                    out,
                    false,
                    opaque(style),
                    name.as_bytes(),
                    flags,
                    &self.value,
                );
                Step::one(Expect::Stored(style))
            }
            25..=29 => {
                // Quiet sets, answered only when they fail; as in text, half the runs end with a
                // denied delete.
                let sets = 1 + self.random.below(4);
                for _ in 0..sets {
                    let style = self.binary(binary::SETQ);
                    let key = self.pick_key();
                    let (name, flags) = self.new_value(key);
                    binary::encode_set(
                        out,
                        true,
                        opaque(style),
                        name.as_bytes(),
                        flags,
                        &self.value,
                    );
                }
                let mut expects = Vec::new();
                if self.random.below(2) == 0 {
                    let style = self.binary(binary::DELETE);
                    let name = self.pick_sentinel();
                    binary::encode(
                        out,
                        binary::DELETE,
                        opaque(style),
                        &[],
                        name.as_bytes(),
                        &[],
                    );
                    expects.push(Expect::Denied(style));
                }
                let style = self.binary(binary::NOOP);
                binary::encode(out, binary::NOOP, opaque(style), &[], &[], &[]);
                expects.push(Expect::Noop(style));
                Step {
                    expects,
                    silent_allowed: sets,
                    silent_denied: 0,
                }
            }
            30..=71 => {
                let style = self.binary(binary::GETK);
                let key = self.pick_key();
                let get = self.get_of(key);
                binary::encode(out, binary::GETK, opaque(style), &[], get.0.as_bytes(), &[]);
                Step::one(Expect::Get {
                    style,
                    keys: vec![get],
                })
            }
            72..=75 => {
                let style = self.binary(binary::DELETE);
                let key = self.pick_key();
                let existed = self.keys.versions[key as usize].take().is_some();
                let name = allowed_key(self.keys.connection, key);
                binary::encode(
                    out,
                    binary::DELETE,
                    opaque(style),
                    &[],
                    name.as_bytes(),
                    &[],
                );
                Step::one(Expect::Deleted { style, existed })
            }
            76..=79 => {
                let style = self.binary(binary::SET);
                let name = self.pick_denied();
                let value = self.denied_value();
                binary::encode_set(out, false, opaque(style), name.as_bytes(), 0, &value);
                Step::one(Expect::Denied(style))
            }
            80..=81 => {
                // A denied quiet set is answered, before the NOOP's answer.
                let denied = self.binary(binary::SETQ);
                let name = self.pick_denied();
                let value = self.denied_value();
                binary::encode_set(out, true, opaque(denied), name.as_bytes(), 0, &value);
                let noop = self.binary(binary::NOOP);
                binary::encode(out, binary::NOOP, opaque(noop), &[], &[], &[]);
                Step {
                    expects: vec![Expect::Denied(denied), Expect::Noop(noop)],
                    silent_allowed: 0,
                    silent_denied: 0,
                }
            }
            82..=84 => {
                let style = self.binary(binary::DELETE);
                let name = self.pick_sentinel();
                binary::encode(
                    out,
                    binary::DELETE,
                    opaque(style),
                    &[],
                    name.as_bytes(),
                    &[],
                );
                Step::one(Expect::Denied(style))
            }
            85..=87 => {
                let style = self.binary(binary::GETK);
                let name = self.pick_sentinel();
                binary::encode(out, binary::GETK, opaque(style), &[], name.as_bytes(), &[]);
                Step::one(Expect::Denied(style))
            }
            _ => {
                let style = self.binary(binary::GETK);
                let key = self.pick_key();
                let get = self.get_of(key);
                binary::encode(out, binary::GETK, opaque(style), &[], get.0.as_bytes(), &[]);
                Step::one(Expect::Get {
                    style,
                    keys: vec![get],
                })
            }
        }
    }
}

fn opaque(style: Style) -> u32 {
    match style {
        Style::Binary { opaque, .. } => opaque,
        Style::Classic | Style::Meta => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reproducible_and_varied() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut lens = Vec::new();
        let mut seen = [false; 256];
        let mut traps = 0;
        for version in 0..20_000 {
            let seed = value_seed(3, 7, version);
            fill_value(seed, &mut a);
            fill_value(seed, &mut b);
            assert_eq!(a, b);
            assert_eq!(a.len(), value_len(seed));
            a.iter().for_each(|&byte| seen[byte as usize] = true);
            traps += usize::from(a.windows(7).any(|w| w == b"\r\nEND\r\n"));
            lens.push(a.len());
        }
        assert!(seen.iter().all(|&seen| seen), "every byte value occurs");
        assert!(traps > 100, "{traps} values hold an END line");
        assert!(lens.contains(&0));
        assert!(lens.iter().any(|&len| len > 128 << 10));
        assert!(lens.iter().all(|&len| len <= MAX_VALUE));
        let small = lens.iter().filter(|&&len| len < 256).count();
        assert!((13_000..15_000).contains(&small), "{small} small values");
    }

    #[test]
    fn seeds_differ_between_connections_keys_and_versions() {
        let seeds = [
            value_seed(0, 0, 0),
            value_seed(1, 0, 0),
            value_seed(0, 1, 0),
            value_seed(0, 0, 1),
        ];
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn gets_expect_what_the_connection_wrote_last() {
        for role in [Role::Text, Role::Binary] {
            let mut planner = Planner::new(2, 4, role, 99);
            let mut out = Vec::new();
            let (mut requests, mut denied) = (0, 0);
            for _ in 0..2_000 {
                out.clear();
                let step = planner.next(&mut out);
                requests += step.expects.len() as u32 + step.silent_allowed + step.silent_denied;
                denied += step.silent_denied;
                for expect in step.expects {
                    denied += u32::from(expect.is_denied());
                    if let Expect::Get { keys, .. } = expect {
                        for (name, seed) in keys {
                            let key: u32 = name.rsplit('/').next().unwrap().parse().unwrap();
                            assert_eq!(seed, planner.keys.seed(key), "{name}");
                        }
                    }
                }
            }
            let percent = denied * 100 / requests;
            assert!(
                (10..=19).contains(&percent),
                "{denied} denied of {requests}"
            );
        }
    }

    #[test]
    fn the_reader_reads_the_shelf_and_is_denied_the_rest() {
        let mut planner = Planner::new(
            9,
            4,
            Role::Reader {
                writers: 3,
                keys: 4,
            },
            5,
        );
        let mut out = Vec::new();
        for _ in 0..1_000 {
            out.clear();
            let step = planner.next(&mut out);
            let text = String::from_utf8_lossy(&out);
            let verb = text.split(' ').next().unwrap();
            match verb {
                "get" | "mg" => assert!(!step.expects[0].is_denied()),
                _ => assert!(
                    step.expects[0].is_denied() || step.silent_denied == 1,
                    "{text}"
                ),
            }
            if let Expect::Get { keys, .. } = &step.expects[0] {
                assert!(keys
                    .iter()
                    .all(|(name, _)| name.starts_with("alliance/fleet/shelf/")));
            }
        }
    }

    #[test]
    fn denied_keys_are_outside_the_allowed_prefix() {
        for key in denied_keys(5).chain((0..SENTINELS).map(sentinel_key)) {
            assert!(!key.starts_with("alliance/fleet/"), "{key}");
        }
        assert_eq!(denied_keys(5).count(), DENIED_KEYS as usize * 2);
    }
}
