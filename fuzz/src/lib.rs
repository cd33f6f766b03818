//! The fuzz body shared by the cargo-fuzz target and the stable, seeded test in
//! `vhd/tests/fuzz_stable.rs`: open arbitrary bytes as an image and, when that succeeds,
//! read, write, check and reopen it. Any panic, or a broken read-after-write, is a bug.

use vhd::{CreateOptions, DiskType, Layer, MemDisk, OpenOptions, Vhd};

/// Writes allocate whole blocks in memory; keep each run small.
const MAX_WRITE_BLOCK: u64 = 4 << 20;
const MAX_PARENT: u64 = 64 << 20;

/// A tiny PRNG seeded from the input, so an input always replays the same operations.
struct Ops(u64);

impl Ops {
    fn new(data: &[u8]) -> Self {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in data.iter().rev().take(64) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Ops(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

pub fn run(data: &[u8]) {
    let _ = vhd::Footer::parse(&data[..data.len().min(512)]);
    if let Ok(h) = <&[u8; 1024]>::try_from(&data[..data.len().min(1024)]) {
        let _ = vhd::DynHeader::parse(h);
    }
    let Ok(mut layer) = Layer::open(MemDisk::new(data.to_vec()), OpenOptions::read_write()) else {
        return;
    };
    let _ = layer.check();
    let mut ops = Ops::new(data);
    let mut layers = vec![layer];
    if layers[0].disk_type() == DiskType::Differencing {
        // Give it a parent with the identity and size it asks for, when small enough.
        let size = layers[0].size();
        let uuid = layers[0]
            .header()
            .map(|h| h.parent_uuid)
            .unwrap_or_default();
        if size > MAX_PARENT {
            return;
        }
        let mut parent = MemDisk::default();
        let mut opts = CreateOptions::new(0, uuid);
        opts.force_size = true;
        if vhd::create_dynamic(&mut parent, size.max(512), &opts).is_err() {
            return;
        }
        match Layer::open(parent, OpenOptions::read_only()) {
            Ok(p) => layers.push(p),
            Err(e) => panic!("fresh parent does not open: {e:?}"),
        }
    }
    let Ok(mut disk) = Vhd::from_layers(layers) else {
        return;
    };
    let size = disk.size();
    let writable = disk.layers()[0]
        .block_size()
        .is_none_or(|b| b <= MAX_WRITE_BLOCK)
        && disk.layers()[0].footer().saved_state == 0;
    let mut buf = vec![0u8; 70_000];
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..12 {
        let len = ops.below(buf.len() as u64 + 1).min(size) as usize;
        let off = ops.below(size - len as u64 + 1);
        if ops.below(2) == 0 || !writable {
            // Reads past the end must fail cleanly, never panic.
            let _ = disk.read_at(off + ops.below(2) * size, &mut buf[..len]);
            continue;
        }
        let fill = ops.next() as u8;
        let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        if disk.write_at(off, &data).is_err() {
            return;
        }
        disk.read_at(off, &mut buf[..len])
            .expect("read after write");
        assert!(buf[..len] == data[..], "read-after-write mismatch at {off}");
        written.push((off, data));
        if ops.below(4) == 0 {
            disk.flush().expect("flush");
        }
    }
    if written.is_empty() {
        return;
    }
    disk.flush().expect("flush");
    // What this crate wrote must reopen and hold the last write.
    let mut layers = disk.into_layers();
    let parents = layers.split_off(1);
    let top = layers.pop().map(Layer::into_inner).unwrap_or_default();
    let mut reopened = vec![Layer::open(top, OpenOptions::read_only()).expect("own image reopens")];
    reopened.extend(parents);
    let mut disk = Vhd::from_layers(reopened).expect("chain reopens");
    let (off, last) = written.pop().unwrap_or_default();
    let mut back = vec![0u8; last.len()];
    disk.read_at(off, &mut back).expect("read reopened");
    assert!(back == last, "write at {off} lost after reopen");
}
