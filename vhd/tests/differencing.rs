//! Differencing chains: reads fall through to the right layer, writes land only in the child,
//! parents are found by relative and absolute locators, and broken chains are refused.

mod common;

use common::{Rng, Scratch, first_diff, read_all};
use std::path::Path;
use vhd::fs::{FsError, create_differencing, create_options, open};
use vhd::{DiskType, Error, OpenOptions};

const SIZE: u64 = 10 << 20;

fn write(path: &Path, off: u64, data: &[u8]) {
    let mut v = open(path, OpenOptions::read_write()).unwrap();
    v.write_at(off, data).unwrap();
    v.flush().unwrap();
}

fn make_base(dir: &Scratch, model: &mut [u8]) -> std::path::PathBuf {
    let base = dir.path("base.vhd");
    let mut opts = create_options();
    opts.force_size = true;
    vhd::fs::create(&base, DiskType::Dynamic, SIZE, &opts).unwrap();
    let mut rng = Rng(1);
    for &(off, len) in &[
        (0u64, 8192usize),
        (5 << 20, 4096),
        ((2 << 20) - 1000, 3000),
        (SIZE - 512, 512),
    ] {
        let mut d = vec![0u8; len];
        rng.fill(&mut d);
        write(&base, off, &d);
        model[off as usize..off as usize + len].copy_from_slice(&d);
    }
    base
}

#[test]
fn chain_reads_through_and_writes_stay_in_child() {
    let dir = Scratch::new("chain");
    let mut model = vec![0u8; SIZE as usize];
    let base = make_base(&dir, &mut model);
    let base_bytes = std::fs::read(&base).unwrap();

    let mid = dir.path("mid.vhd");
    create_differencing(&mid, &base, None, &create_options()).unwrap();
    assert_eq!(
        first_diff(&read_all(&mid), &model),
        None,
        "empty child reads as parent"
    );

    let mut rng = Rng(2);
    let writes: &[(u64, usize)] = &[
        (100, 10),
        (4000, 600),
        (5 << 20, 512),
        ((5 << 20) + 1024, 7),
        (9 << 20, 70_000),
    ];
    for &(off, len) in writes {
        let mut d = vec![0u8; len];
        rng.fill(&mut d);
        write(&mid, off, &d);
        model[off as usize..off as usize + len].copy_from_slice(&d);
    }
    assert_eq!(
        first_diff(&read_all(&mid), &model),
        None,
        "child over parent"
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_bytes,
        "parent untouched"
    );

    // A third layer, with many small writes to exercise the pending-bitmap path.
    let top = dir.path("top.vhd");
    create_differencing(&top, &mid, None, &create_options()).unwrap();
    let mid_bytes = std::fs::read(&mid).unwrap();
    {
        let mut v = open(&top, OpenOptions::read_write()).unwrap();
        assert_eq!(v.layers().len(), 3);
        for i in 0..200u64 {
            let off = rng.below(SIZE - 3000);
            let len = 1 + rng.below(3000) as usize;
            let mut d = vec![0u8; len];
            rng.fill(&mut d);
            v.write_at(off, &d).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&d);
            if i % 37 == 0 {
                v.flush().unwrap();
            }
            if i % 50 == 0 {
                let mut got = vec![0u8; SIZE as usize];
                v.read_at(0, &mut got).unwrap();
                assert_eq!(first_diff(&got, &model), None, "live read after write {i}");
            }
        }
        v.flush().unwrap();
    }
    assert_eq!(
        first_diff(&read_all(&top), &model),
        None,
        "three-layer chain"
    );
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);
    assert_eq!(std::fs::read(&mid).unwrap(), mid_bytes);
    let mut layer = vhd::fs::open_layer(&top, OpenOptions::read_only()).unwrap();
    assert!(layer.check().unwrap().is_clean());
}

#[test]
fn parent_found_by_relative_and_absolute_locator() {
    let dir = Scratch::new("locators");
    let mut model = vec![0u8; SIZE as usize];
    let base = make_base(&dir, &mut model);
    std::fs::create_dir(dir.path("kids")).unwrap();
    let child = dir.path("kids/child.vhd");
    create_differencing(&child, &base, None, &create_options()).unwrap();
    write(&child, 12345, b"child data");
    model[12345..12355].copy_from_slice(b"child data");

    // Absolute only: move the child elsewhere, breaking the relative path.
    std::fs::create_dir_all(dir.path("elsewhere/deeper")).unwrap();
    let moved = dir.path("elsewhere/deeper/child.vhd");
    std::fs::rename(&child, &moved).unwrap();
    let (v, paths) = vhd::fs::open_with_paths(&moved, OpenOptions::read_only()).unwrap();
    assert_eq!(paths[1], base, "found by the absolute locator");
    drop(v);
    assert_eq!(first_diff(&read_all(&moved), &model), None);

    // Relative only: move parent and child together, breaking the absolute path.
    std::fs::rename(&moved, &child).unwrap();
    let moved_dir = dir.0.with_extension("moved");
    let _ = std::fs::remove_dir_all(&moved_dir);
    std::fs::rename(&dir.0, &moved_dir).unwrap();
    let relocated = moved_dir.join("kids/child.vhd");
    let (_, paths) = vhd::fs::open_with_paths(&relocated, OpenOptions::read_only()).unwrap();
    assert_eq!(
        paths[1],
        moved_dir.join("kids").join("..").join("base.vhd"),
        "relative locator"
    );
    assert_eq!(first_diff(&read_all(&relocated), &model), None);
    std::fs::rename(&moved_dir, &dir.0).unwrap();

    // Neither: a clear error naming the child and what was tried.
    std::fs::rename(&base, dir.path("renamed.vhd")).unwrap();
    let err = open(&child, OpenOptions::read_only()).unwrap_err();
    assert!(matches!(err, FsError::ParentNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("child.vhd") && msg.contains("base.vhd"),
        "{msg}"
    );
}

fn vhd_err(r: Result<vhd::Vhd<vhd::fs::FileIo>, FsError>) -> Error<std::io::Error> {
    match r {
        Err(FsError::Image { error, .. }) => error,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a broken chain"),
    }
}

/// Rewrites both footer copies of a sparse image with a new unique id.
fn set_uuid(path: &Path, uuid: [u8; 16]) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    let mut f = vhd::Footer::parse(&bytes[len - 512..]).unwrap();
    f.uuid = uuid;
    let enc = f.encode();
    bytes[..512].copy_from_slice(&enc);
    bytes[len - 512..].copy_from_slice(&enc);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn broken_chains_are_refused() {
    let dir = Scratch::new("broken");
    let mut model = vec![0u8; SIZE as usize];
    let base = make_base(&dir, &mut model);
    let child = dir.path("child.vhd");
    create_differencing(&child, &base, None, &create_options()).unwrap();

    // Parent replaced by a different disk at the same path.
    let saved = dir.path("base.saved");
    std::fs::rename(&base, &saved).unwrap();
    vhd::fs::create(&base, DiskType::Dynamic, SIZE, &create_options()).unwrap();
    assert!(matches!(
        vhd_err(open(&child, OpenOptions::read_only())),
        Error::ParentUuidMismatch
    ));
    std::fs::remove_file(&base).unwrap();
    std::fs::rename(&saved, &base).unwrap();

    // A -> A: an image that names itself as parent.
    let selfish = dir.path("self.vhd");
    create_differencing(&selfish, &base, None, &create_options()).unwrap();
    let self_uuid = vhd::fs::open_layer(&selfish, OpenOptions::read_only())
        .unwrap()
        .footer()
        .uuid;
    let tmp = dir.path("tmp.vhd");
    create_differencing(&tmp, &selfish, Some(&selfish), &create_options()).unwrap();
    std::fs::rename(&tmp, &selfish).unwrap();
    set_uuid(&selfish, self_uuid);
    assert!(matches!(
        vhd_err(open(&selfish, OpenOptions::read_only())),
        Error::ParentCycle
    ));

    // A -> B -> A.
    let a = dir.path("a.vhd");
    let b = dir.path("b.vhd");
    create_differencing(&a, &base, None, &create_options()).unwrap();
    let a_uuid = vhd::fs::open_layer(&a, OpenOptions::read_only())
        .unwrap()
        .footer()
        .uuid;
    create_differencing(&b, &a, None, &create_options()).unwrap();
    let tmp = dir.path("tmp2.vhd");
    create_differencing(&tmp, &b, Some(&a), &create_options()).unwrap();
    std::fs::rename(&tmp, &a).unwrap();
    set_uuid(&a, a_uuid);
    assert!(matches!(
        vhd_err(open(&b, OpenOptions::read_only())),
        Error::ParentCycle
    ));

    // Too deep: a chain of MAX_CHAIN_DEPTH + 1 images.
    let mut prev = base.clone();
    for i in 0..vhd::MAX_CHAIN_DEPTH {
        let next = dir.path(&format!("deep{i}.vhd"));
        create_differencing(&next, &prev, None, &create_options()).unwrap();
        prev = next;
    }
    assert!(matches!(
        vhd_err(open(&prev, OpenOptions::read_only())),
        Error::ChainTooDeep
    ));
    // One less is fine.
    let ok = dir.path(&format!("deep{}.vhd", vhd::MAX_CHAIN_DEPTH - 2));
    assert_eq!(first_diff(&read_all(&ok), &model), None);
}

#[test]
fn in_memory_chain_and_parent_checks() {
    use vhd::{Layer, MemDisk, Vhd};
    let opts = vhd::CreateOptions::new(0, [1; 16]);
    let mut base = MemDisk::default();
    vhd::create_dynamic(&mut base, 4 << 20, &opts).unwrap();
    let base_layer = Layer::open(base.clone(), OpenOptions::read_only()).unwrap();
    let link = vhd::link_from(&base_layer, 0, "base.vhd");
    let mut child = MemDisk::default();
    vhd::create_differencing(&mut child, &link, &vhd::CreateOptions::new(0, [2; 16])).unwrap();

    let open_child = || Layer::open(child.clone(), OpenOptions::read_write()).unwrap();
    let open_base = || Layer::open(base.clone(), OpenOptions::read_only()).unwrap();
    assert!(matches!(
        Vhd::from_layers(vec![open_child()]),
        Err(Error::ParentRequired)
    ));
    assert!(matches!(
        Vhd::open(child.clone(), OpenOptions::read_only()),
        Err(Error::ParentRequired)
    ));
    assert!(matches!(
        Vhd::from_layers(vec![open_base(), open_child()]),
        Err(Error::NotDifferencing)
    ));
    let mut other = MemDisk::default();
    vhd::create_dynamic(&mut other, 4 << 20, &vhd::CreateOptions::new(0, [3; 16])).unwrap();
    let other = Layer::open(other, OpenOptions::read_only()).unwrap();
    assert!(matches!(
        Vhd::from_layers(vec![open_child(), other]),
        Err(Error::ParentUuidMismatch)
    ));
    let mut small = MemDisk::default();
    vhd::create_dynamic(&mut small, 1 << 20, &vhd::CreateOptions::new(0, [1; 16])).unwrap();
    let small = Layer::open(small, OpenOptions::read_only()).unwrap();
    assert!(matches!(
        Vhd::from_layers(vec![open_child(), small]),
        Err(Error::ParentTooSmall { .. })
    ));

    let mut v = Vhd::from_layers(vec![open_child(), open_base()]).unwrap();
    v.write_at(1000, b"hello").unwrap();
    v.flush().unwrap();
    let mut buf = [0u8; 7];
    v.read_at(999, &mut buf).unwrap();
    assert_eq!(&buf, b"\0hello\0");
    // The parent layer is read-only: only the child changed.
    let layers = v.into_layers();
    let mut it = layers.into_iter();
    let new_child = it.next().unwrap().into_inner();
    assert!(
        it.next().unwrap().into_inner().data == base.data,
        "parent changed"
    );
    assert!(new_child.data != child.data, "child unchanged");
}

/// `read_with` names, piece by piece, the stored bytes and holes that `read_at` reads: reading
/// each stored piece at its place and zero-filling each hole gives the same bytes, the pieces
/// cover the range once in order, and a visitor that stops ends the walk there.
#[test]
fn read_with_names_where_each_piece_lives() {
    use embedded_io::{Read, Seek, SeekFrom};
    use vhd::{Layer, MemDisk, Source, Vhd};
    let mut o = vhd::CreateOptions::new(0, [1; 16]);
    o.block_size = 64 << 10;
    let mut base = MemDisk::default();
    vhd::create_dynamic(&mut base, 1 << 20, &o).unwrap();
    let mut b = Vhd::open(base.clone(), OpenOptions::read_write()).unwrap();
    b.write_at(0x1_0000, &[0xBB; 0x2_0000]).unwrap();
    b.flush().unwrap();
    let base = b.into_layers().remove(0).into_inner();
    let base_layer = Layer::open(base.clone(), OpenOptions::read_only()).unwrap();
    let link = vhd::link_from(&base_layer, 0, "base.vhd");
    let mut o2 = vhd::CreateOptions::new(0, [2; 16]);
    o2.block_size = 64 << 10;
    let mut child = MemDisk::default();
    vhd::create_differencing(&mut child, &link, &o2).unwrap();
    let mut v = Vhd::from_layers(vec![
        Layer::open(child, OpenOptions::read_write()).unwrap(),
        Layer::open(base, OpenOptions::read_only()).unwrap(),
    ])
    .unwrap();
    // Child sectors in the middle of a parent block and across a block boundary.
    v.write_at(0x1_8000, &[0xCC; 0x600]).unwrap();
    v.write_at(0x2_fe00, &[0xDD; 0x400]).unwrap();
    let (from, len) = (0x0_f000u64, 0x3_2000u64);
    let mut want = vec![0u8; len as usize];
    v.read_at(from, &mut want).unwrap();

    let mut got = vec![0x55u8; len as usize];
    let mut next = 0u64;
    let mut pieces = 0;
    let done = v
        .read_with(from, len, &mut |src, pos, n| {
            assert_eq!(pos, next, "pieces in order, none skipped");
            next = pos + n;
            pieces += 1;
            let part = &mut got[pos as usize..(pos + n) as usize];
            match src {
                Source::Stored { io, at } => {
                    io.seek(SeekFrom::Start(at)).unwrap();
                    io.read_exact(part).unwrap();
                }
                Source::Zero => part.fill(0),
            }
            Ok(true)
        })
        .unwrap();
    assert!(done);
    assert_eq!(next, len);
    assert!(
        pieces >= 6,
        "hole, parent, child, parent, child, parent, hole: {pieces}"
    );
    assert!(got == want, "the pieces read as read_at reads");

    let mut seen = 0;
    let done = v
        .read_with(from, len, &mut |_, _, _| {
            seen += 1;
            Ok(seen < 2)
        })
        .unwrap();
    assert!(!done);
    assert_eq!(seen, 2, "the walk stops where the visitor says");
    let end = v.size();
    assert!(
        v.read_with(end - 0x200, 0x400, &mut |_, _, _| Ok(true))
            .is_err(),
        "out of range"
    );
}
