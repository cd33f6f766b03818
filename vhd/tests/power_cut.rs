//! Power cuts: replay every prefix of the device writes an allocating workload issued. Each
//! prefix must open, check clean, and hold every write acknowledged by a completed flush.
//! A second test lets the device reorder writes between flushes (any subset of the writes
//! since the last completed storage flush survives).

mod common;

use common::Rng;
use embedded_io::{ErrorType, Read, Seek, SeekFrom, Write};
use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use vhd::{CreateOptions, Layer, MemDisk, OpenOptions, Vhd};

const SIZE: u64 = 1 << 20;
const BLOCK: u32 = 64 << 10;

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Flush,
}

/// A MemDisk that logs every device write and flush.
struct Recorder {
    disk: MemDisk,
    log: Rc<RefCell<Vec<Op>>>,
    pos: u64,
}

impl ErrorType for Recorder {
    type Error = Infallible;
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        self.disk.seek(SeekFrom::Start(self.pos))?;
        let n = self.disk.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.log
            .borrow_mut()
            .push(Op::Write(self.pos, buf.to_vec()));
        self.disk.seek(SeekFrom::Start(self.pos))?;
        let n = self.disk.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        self.log.borrow_mut().push(Op::Flush);
        Ok(())
    }
}

impl Seek for Recorder {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, Infallible> {
        self.pos = self.disk.seek(pos)?;
        Ok(self.pos)
    }
}

enum Guest {
    Write(u64, Vec<u8>),
    Flush,
}

/// A workload: allocations in fresh blocks, overwrites, unaligned and block-crossing writes,
/// with flushes in between.
fn workload(seed: u64) -> Vec<Guest> {
    let mut rng = Rng(seed);
    let mut ops = Vec::new();
    for i in 0..36u64 {
        let len = match i % 4 {
            0 => 4096,
            1 => 1 + rng.below(1500) as usize,
            2 => 512 * (1 + rng.below(200) as usize),
            _ => (BLOCK as usize) + 777,
        };
        let len = len.min(SIZE as usize);
        let off = rng.below(SIZE - len as u64 + 1);
        let mut d = vec![0u8; len];
        rng.fill(&mut d);
        ops.push(Guest::Write(off, d));
        if i % 5 == 4 {
            ops.push(Guest::Flush);
        }
    }
    ops.push(Guest::Flush);
    ops
}

/// The base images: (parent bytes if differencing, top image bytes).
fn images(diff: bool) -> (Option<MemDisk>, MemDisk) {
    let mut opts = CreateOptions::new(0, [7; 16]);
    opts.block_size = BLOCK;
    opts.force_size = true;
    let mut base = MemDisk::default();
    vhd::create_dynamic(&mut base, SIZE, &opts).unwrap();
    if !diff {
        return (None, base);
    }
    // Give the parent recognisable content, so reading the parent by mistake shows.
    let mut v = Vhd::open(base, OpenOptions::read_write()).unwrap();
    let mut rng = Rng(99);
    let mut d = vec![0u8; SIZE as usize / 2];
    rng.fill(&mut d);
    v.write_at(SIZE / 4, &d).unwrap();
    v.flush().unwrap();
    let base = v.into_layers().pop().unwrap().into_inner();
    let parent = Layer::open(base.clone(), OpenOptions::read_only()).unwrap();
    let link = vhd::link_from(&parent, 0, "parent.vhd");
    let mut child = MemDisk::default();
    vhd::create_differencing(&mut child, &link, &CreateOptions::new(0, [8; 16])).unwrap();
    (Some(base), child)
}

fn open_disk(
    parent: &Option<MemDisk>,
    top: MemDisk,
    writable: bool,
) -> Result<Vhd<MemDisk>, String> {
    let opts = OpenOptions {
        writable,
        ..OpenOptions::default()
    };
    let mut layers = vec![Layer::open(top, opts).map_err(|e| e.to_string())?];
    if let Some(p) = parent {
        layers.push(Layer::open(p.clone(), OpenOptions::read_only()).unwrap());
    }
    Vhd::from_layers(layers).map_err(|e| e.to_string())
}

struct Run {
    log: Vec<Op>,
    /// For each acknowledged guest flush: the log length when it returned, and the disk
    /// contents the guest had written by then.
    acks: Vec<(usize, Vec<u8>)>,
    /// Guest writes with the log length when they were issued.
    writes: Vec<(usize, u64, Vec<u8>)>,
    initial_view: Vec<u8>,
}

fn record(parent: &Option<MemDisk>, top: &MemDisk, ops: &[Guest]) -> Run {
    let log = Rc::new(RefCell::new(Vec::new()));
    let rec = Recorder {
        disk: top.clone(),
        log: log.clone(),
        pos: 0,
    };
    let mut layers = vec![Layer::open(rec, OpenOptions::read_write()).unwrap()];
    let mut initial_view = vec![0u8; SIZE as usize];
    if let Some(p) = parent {
        let mut pv = Vhd::open(p.clone(), OpenOptions::read_only()).unwrap();
        pv.read_at(0, &mut initial_view).unwrap();
        // The parent never changes; its layer type must match the child's storage type.
        let prec = Recorder {
            disk: p.clone(),
            log: Rc::new(RefCell::new(Vec::new())),
            pos: 0,
        };
        layers.push(Layer::open(prec, OpenOptions::read_only()).unwrap());
    }
    let mut v = Vhd::from_layers(layers).unwrap();
    let mut model = initial_view.clone();
    let mut acks = Vec::new();
    let mut writes = Vec::new();
    for op in ops {
        match op {
            Guest::Write(off, d) => {
                writes.push((log.borrow().len(), *off, d.clone()));
                v.write_at(*off, d).unwrap();
                model[*off as usize..*off as usize + d.len()].copy_from_slice(d);
            }
            Guest::Flush => {
                v.flush().unwrap();
                acks.push((log.borrow().len(), model.clone()));
            }
        }
    }
    let log = log.borrow().clone();
    Run {
        log,
        acks,
        writes,
        initial_view,
    }
}

/// Every byte equals the last acknowledged state or a value some later write put there.
fn verify_content(run: &Run, cut: usize, got: &[u8], what: &str) {
    let (ack_at, snapshot) = run
        .acks
        .iter()
        .rev()
        .find(|(at, _)| *at <= cut)
        .map(|(a, s)| (*a, s.as_slice()))
        .unwrap_or((0, run.initial_view.as_slice()));
    let later: Vec<&(usize, u64, Vec<u8>)> = run.writes.iter().filter(|w| w.0 >= ack_at).collect();
    for (i, (&g, &s)) in got.iter().zip(snapshot).enumerate() {
        if g == s {
            continue;
        }
        let i = i as u64;
        let explained = later
            .iter()
            .any(|(_, off, d)| i >= *off && i < off + d.len() as u64 && d[(i - off) as usize] == g);
        assert!(
            explained,
            "{what}: byte {i} is {g:#04x}, acknowledged {s:#04x}, no later write explains it"
        );
    }
}

fn apply(base: &MemDisk, ops: &[&Op]) -> MemDisk {
    let mut d = base.clone();
    for op in ops {
        if let Op::Write(off, data) = op {
            d.seek(SeekFrom::Start(*off)).unwrap();
            d.write(data).unwrap();
        }
    }
    d
}

fn prefix_cuts(diff: bool, seed: u64) {
    let (parent, top) = images(diff);
    let run = record(&parent, &top, &workload(seed));
    let write_positions: Vec<usize> = run
        .log
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Op::Write(..)))
        .map(|(i, _)| i)
        .collect();
    assert!(
        write_positions.len() > 60,
        "workload too small: {}",
        write_positions.len()
    );
    let mut rng = Rng(seed ^ 0x5555);
    for k in 0..=write_positions.len() {
        // The cut lands after write k and any flushes that completed before write k+1.
        let cut = write_positions.get(k).copied().unwrap_or(run.log.len());
        let ops: Vec<&Op> = run.log[..cut].iter().collect();
        let state = apply(&top, &ops);
        let what = format!("diff={diff} cut after write {k}");
        let mut layer = Layer::open(state.clone(), OpenOptions::read_only())
            .unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
        let report = layer.check().unwrap();
        assert!(
            report.is_clean(),
            "{what}: check found damage: {:?}",
            report.findings
        );
        let mut v = open_disk(&parent, state, true).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut got = vec![0u8; SIZE as usize];
        v.read_at(0, &mut got).unwrap();
        verify_content(&run, cut, &got, &what);
        // The survivor stays writable: a new allocating write lands and checks clean.
        let off = rng.below(SIZE - 9000);
        v.write_at(off, &[0xa5; 9000]).unwrap();
        v.flush().unwrap();
        let state = v.into_layers().swap_remove(0).into_inner();
        let mut layer = Layer::open(state.clone(), OpenOptions::read_only()).unwrap();
        assert!(
            layer.check().unwrap().is_clean(),
            "{what}: damaged after resuming"
        );
        let mut v = open_disk(&parent, state, false).unwrap();
        let mut back = vec![0u8; 9000];
        v.read_at(off, &mut back).unwrap();
        assert!(
            back.iter().all(|&b| b == 0xa5),
            "{what}: write after resume lost"
        );
    }
}

#[test]
fn dynamic_survives_every_cut() {
    prefix_cuts(false, 1);
    prefix_cuts(false, 2);
}

#[test]
fn differencing_survives_every_cut() {
    prefix_cuts(true, 3);
    prefix_cuts(true, 4);
}

/// Devices may reorder writes until a flush completes: keep every write before the last
/// flush plus a random subset of those after. Flushed data must survive and the image must
/// open; a lost end footer is allowed (the offset-0 copy covers it, and check reports it).
fn reordered_cuts(diff: bool, seed: u64) {
    let (parent, top) = images(diff);
    let run = record(&parent, &top, &workload(seed));
    let mut rng = Rng(seed);
    let flushes: Vec<usize> = run
        .log
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Op::Flush))
        .map(|(i, _)| i)
        .chain([run.log.len()])
        .collect();
    let mut prev = 0;
    for &f in &flushes {
        for trial in 0..12 {
            let mut ops: Vec<&Op> = run.log[..prev].iter().collect();
            ops.extend(run.log[prev..f].iter().filter(|_| rng.below(2) == 0));
            let state = apply(&top, &ops);
            let what = format!("diff={diff} epoch ending {f} trial {trial}");
            let mut v =
                open_disk(&parent, state.clone(), false).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut got = vec![0u8; SIZE as usize];
            v.read_at(0, &mut got).unwrap();
            verify_content(&run, prev, &got, &what);
            let mut layer = Layer::open(state, OpenOptions::read_only()).unwrap();
            let r = layer.check().unwrap();
            assert!(
                r.findings
                    .iter()
                    .all(|f| !f.is_damage() || *f == vhd::Finding::EndFooterInvalid),
                "{what}: {:?}",
                r.findings
            );
        }
        prev = f;
    }
}

#[test]
fn reordering_between_flushes_keeps_flushed_data() {
    reordered_cuts(false, 5);
    reordered_cuts(true, 6);
}
