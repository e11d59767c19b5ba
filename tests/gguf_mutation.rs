//! A mutation test of the GGUF reader and of everything a GGUF file feeds: thousands of files
//! derived deterministically (a fixed-seed SplitMix64) from the committed GGUF fixtures
//! (`tests/fixtures/models/*-q4_0/model.gguf`, and `tests/fixtures/kquant/*/model.gguf` when
//! that folder exists), each taken as far as it goes down the CPU path `flint run` takes:
//!
//! - the parser in memory (`GgufFile::from_bytes`) and from a file (`ModelFiles::open`, which
//!   maps it), which must agree;
//! - the streamed loader's CPU side: the header from a prefix (`GgufFile::from_header`, which
//!   must say "truncated" for a prefix that ends inside the header), then every tensor through a
//!   window (`load_packed` and `load_f32`);
//! - the config (`config_from_gguf`) and what is worked out from it alone (the parameter counts
//!   `flint info` prints, the GPU path's cache size), the embedded tokenizer when there is one,
//!   every weight through the packed loader into the f32 reference model, and a few generated
//!   tokens (`flint::generate` over a `CpuGenerator`, from the rendered chat template when the
//!   tokenizer has one, else from the text encoded as it is).
//!
//! Mutations: bit flips and byte writes biased toward the header, the metadata and the
//! tensor-info table; every integer field of the header set to boundary values; truncation;
//! duplicated, deleted and inserted byte ranges; every ggml type id 0..=45 and large ones; the
//! dimension count and the dimensions; offsets; tensors renamed, dropped, duplicated, retyped;
//! metadata values changed, retyped, dropped and added; other architectures; an embedded
//! tokenizer, then broken in each of its parts; NaN and infinity in the weights.
//!
//! Every case must end in `Ok` or in a `flint::Error` whose message names a problem. Panics are
//! caught per case and listed at the end with their backtraces; a case that does not finish
//! within `CASE_LIMIT` is a hang; and this binary's allocator refuses (and reports) any single
//! allocation over `ALLOC_CAP` made while a case runs, since no file of ~100 KB may make flint
//! allocate that much: a corrupt count must be refused before anything is sized by it.
//!
//! To rerun some cases alone, with their outcomes printed:
//! `FLINT_MUTATION_ONLY=llama-q4_0#123,olmoe-q4_0#7 cargo test --release --test gguf_mutation -- --nocapture`;
//! `FLINT_MUTATION_DUMP=some/dir` writes the bytes of every failing (or selected) case there.

use flint::config::gguf::config_from_gguf;
use flint::engine::{CpuGenerator, Generator};
use flint::format::gguf::GgufFile;
use flint::sampler::SamplingParams;
use flint::tokenizer::Message;
use flint::weights::{Bytes, TensorSource};
use flint::{GenerateOptions, ModelFiles};
use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

/// The seed every case's generator is derived from (with the fixture's name and the case number).
const SEED: u64 = 0x9E6F_F11E_0000_2024;
/// Random mutations per fixture, on top of the systematic sweeps.
const RANDOM_PER_FIXTURE: usize = 500;
/// A k-quant fixture (`tests/fixtures/kquant`) has the metadata of the q4_0 fixture of its
/// architecture, and a case of it costs some 20 times more (a 0.5-0.75 MB file dequantized and
/// run): each of them takes one case in `KQUANT_STRIDE` of every systematic sweep (at least one
/// of each kind, a different slice per fixture) and `KQUANT_RANDOM` random cases.
const KQUANT_STRIDE: usize = 6;
const KQUANT_RANDOM: usize = 50;
/// The fewest cases a full run must have.
const MIN_CASES: usize = 2000;
/// A case taking longer than this is a hang (cases take milliseconds).
const CASE_LIMIT: Duration = Duration::from_secs(10);
/// After this many hangs the run stops: each hung case keeps a thread busy.
const MAX_HANGS: usize = 4;
/// The most a single allocation may ask for while a case runs.
const ALLOC_CAP: usize = 256 << 20;

// ------------------------------------------------------------------------------------------------
// Guards: an allocator that refuses huge allocations in a case, a panic hook that keeps the backtrace

thread_local! {
    /// The case this thread is running (`usize::MAX`: none), for the allocator and the panic hook.
    static CASE: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Where the last panic of a case happened, and its backtrace.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

struct HugeAlloc {
    case: usize,
    size: usize,
    backtrace: Backtrace,
}

static HUGE: Mutex<Vec<HugeAlloc>> = Mutex::new(Vec::new());

/// The system allocator, except that an allocation over `ALLOC_CAP` made by a thread running a
/// case is recorded with its backtrace and never made: the thread parks for good (an allocator
/// may not unwind), and the watchdog moves on to the next case.
struct CappedAlloc;

impl CappedAlloc {
    fn check(size: usize) {
        if size <= ALLOC_CAP {
            return;
        }
        let case = CASE.try_with(|c| c.replace(usize::MAX)).unwrap_or(usize::MAX);
        if case == usize::MAX {
            return;
        }
        let backtrace = Backtrace::force_capture();
        HUGE.lock().unwrap_or_else(|e| e.into_inner()).push(HugeAlloc { case, size, backtrace });
        loop {
            std::thread::park();
        }
    }
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAlloc = CappedAlloc;

/// Panics in a case are kept quiet and recorded (location and backtrace) for the final report;
/// any other panic goes to the default hook.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CASE.with(Cell::get) == usize::MAX {
            return default(info);
        }
        let location = info.location().map_or("?".into(), |l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((location, Backtrace::force_capture())));
    }));
}

// ------------------------------------------------------------------------------------------------
// A deterministic generator

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// Uniform in `lo..hi` (`lo` when the range is empty).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo))
    }
    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// FNV-1a, to derive a fixture's seeds from its name (so adding fixtures changes no other case).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

// ------------------------------------------------------------------------------------------------
// A fixture's layout: every field of its header, so mutations can aim and say what they hit

/// GGUF value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

#[derive(Clone)]
struct Kv {
    key: String,
    ty: u32,
    /// The encoded value, as in the file.
    value: Vec<u8>,
}

#[derive(Clone)]
struct Ti {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

/// A fixed-width integer field of the header.
#[derive(Clone)]
struct Field {
    at: usize,
    wide: bool,
    what: String,
}

struct Fixture {
    name: String,
    /// A k-quant fixture, whose sweeps are sampled (`KQUANT_STRIDE`).
    kquant: bool,
    bytes: Vec<u8>,
    version: u32,
    kvs: Vec<Kv>,
    tis: Vec<Ti>,
    fields: Vec<Field>,
    /// Labelled spans of the header `(start, end, label)`, to say what an offset hits.
    spans: Vec<(usize, usize, String)>,
    kv_end: usize,
    ti_end: usize,
    data_offset: usize,
    alignment: usize,
}

/// A reader that trusts its input: fixtures are well formed.
struct Scan<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.b[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("a fixture string is UTF-8")
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            T_U8 | T_I8 | T_BOOL => drop(self.take(1)),
            T_U16 | T_I16 => drop(self.take(2)),
            T_U32 | T_I32 | T_F32 => drop(self.take(4)),
            T_U64 | T_I64 | T_F64 => drop(self.take(8)),
            T_STRING => drop(self.string()),
            T_ARRAY => {
                let (elem, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.skip_value(elem);
                }
            }
            other => panic!("value type {other} in a fixture"),
        }
    }
}

impl Fixture {
    fn parse(name: String, bytes: Vec<u8>) -> Fixture {
        let mut s = Scan { b: &bytes, pos: 0 };
        let mut fields = vec![];
        let mut spans = vec![];
        let mut field = |at: usize, wide: bool, what: String| {
            spans.push((at, at + if wide { 8 } else { 4 }, what.clone()));
            fields.push(Field { at, wide, what });
        };
        assert_eq!(s.take(4), b"GGUF", "{name}: not a GGUF fixture");
        field(0, false, "the magic".into());
        field(4, false, "the version".into());
        field(8, true, "the tensor count".into());
        field(16, true, "the metadata count".into());
        let version = s.u32();
        let (tensor_count, kv_count) = (s.u64(), s.u64());
        let mut named = vec![];
        let mut kvs = vec![];
        for i in 0..kv_count {
            field(s.pos, true, format!("the length of metadata key #{i}"));
            let key_at = s.pos + 8;
            let key = s.string();
            named.push((key_at, s.pos, format!("metadata key `{key}`")));
            field(s.pos, false, format!("the value type of `{key}`"));
            let ty = s.u32();
            let value_at = s.pos;
            match ty {
                T_U32 | T_I32 | T_F32 => field(value_at, false, format!("the value of `{key}`")),
                T_U64 | T_I64 | T_F64 => field(value_at, true, format!("the value of `{key}`")),
                T_STRING => field(value_at, true, format!("the string length of `{key}`")),
                T_ARRAY => {
                    field(value_at, false, format!("the element type of `{key}`"));
                    field(value_at + 4, true, format!("the array length of `{key}`"));
                }
                _ => {}
            }
            s.skip_value(ty);
            named.push((value_at, s.pos, format!("the value of `{key}`")));
            kvs.push(Kv { key, ty, value: bytes[value_at..s.pos].to_vec() });
        }
        let kv_end = s.pos;
        let alignment = kvs.iter().find(|kv| kv.key == "general.alignment").map_or(32, |kv| kv_int(kv) as usize);
        let mut tis = vec![];
        for i in 0..tensor_count {
            let at = s.pos;
            field(at, true, format!("the name length of tensor #{i}"));
            let name = s.string();
            named.push((at + 8, s.pos, format!("the name of tensor `{name}`")));
            field(s.pos, false, format!("the dimension count of `{name}`"));
            let n_dims = s.u32();
            let mut dims = vec![];
            for d in 0..n_dims {
                field(s.pos, true, format!("dims[{d}] of `{name}`"));
                dims.push(s.u64());
            }
            field(s.pos, false, format!("the ggml type of `{name}`"));
            let ty = s.u32();
            field(s.pos, true, format!("the data offset of `{name}`"));
            let offset = s.u64();
            tis.push(Ti { name, dims, ty, offset });
        }
        let ti_end = s.pos;
        let data_offset = ti_end.next_multiple_of(alignment);
        named.push((ti_end, data_offset, "the padding before the data section".into()));
        spans.extend(named);
        Fixture { name, kquant: false, bytes, version, kvs, tis, fields, spans, kv_end, ti_end, data_offset, alignment }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.data_offset..]
    }

    /// What byte `at` of the fixture is.
    fn describe(&self, at: usize) -> String {
        if at >= self.bytes.len() {
            return "the end of the file".into();
        }
        if at >= self.data_offset {
            let rel = (at - self.data_offset) as u64;
            return match self.tis.iter().filter(|t| t.offset <= rel).max_by_key(|t| t.offset) {
                Some(t) => format!("the data of `{}` (+{})", t.name, rel - t.offset),
                None => "the data section".into(),
            };
        }
        match self.spans.iter().filter(|(s, e, _)| (*s..*e).contains(&at)).min_by_key(|(s, e, _)| e - s) {
            Some((s, _, label)) => format!("{label} (+{})", at - s),
            None => "the header".into(),
        }
    }

    fn arch(&self) -> String {
        let kv = self.kvs.iter().find(|kv| kv.key == "general.architecture").expect("general.architecture");
        String::from_utf8(kv.value[8..].to_vec()).unwrap()
    }

    fn block_count(&self) -> u64 {
        self.kvs.iter().find(|kv| kv.key.ends_with(".block_count")).map_or(1, kv_int)
    }

    fn vocab(&self) -> usize {
        self.tis.iter().find(|t| t.name == "token_embd.weight").map_or(64, |t| t.dims[1] as usize)
    }

    /// The file these metadata and tensor infos describe, over this fixture's data section.
    fn rebuild(&self, kvs: &[Kv], tis: &[Ti]) -> Vec<u8> {
        build(self.version, kvs, tis, self.alignment, self.data())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF file: header, metadata, tensor infos, zero padding to `alignment`, `data`.
fn build(version: u32, kvs: &[Kv], tis: &[Ti], alignment: usize, data: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tis.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for kv in kvs {
        put_str(&mut out, &kv.key);
        out.extend_from_slice(&kv.ty.to_le_bytes());
        out.extend_from_slice(&kv.value);
    }
    for t in tis {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(alignment), 0);
    out.extend_from_slice(data);
    out
}

/// An integer metadata value as u64 (two's complement for negative ones).
fn kv_int(kv: &Kv) -> u64 {
    let v = &kv.value;
    match kv.ty {
        T_U8 | T_BOOL => u64::from(v[0]),
        T_I8 => v[0] as i8 as u64,
        T_U16 => u64::from(u16::from_le_bytes([v[0], v[1]])),
        T_I16 => i16::from_le_bytes([v[0], v[1]]) as u64,
        T_U32 => u64::from(u32::from_le_bytes(v[..4].try_into().unwrap())),
        T_I32 => i32::from_le_bytes(v[..4].try_into().unwrap()) as u64,
        T_F32 => f32::from_le_bytes(v[..4].try_into().unwrap()) as u64,
        T_U64 | T_I64 => u64::from_le_bytes(v[..8].try_into().unwrap()),
        T_F64 => f64::from_le_bytes(v[..8].try_into().unwrap()) as u64,
        _ => 0,
    }
}

fn kv_f32(kv: &Kv) -> f32 {
    match kv.ty {
        T_F32 => f32::from_le_bytes(kv.value[..4].try_into().unwrap()),
        T_F64 => f64::from_le_bytes(kv.value[..8].try_into().unwrap()) as f32,
        _ => kv_int(kv) as f32,
    }
}

fn is_numeric(ty: u32) -> bool {
    !matches!(ty, T_STRING | T_ARRAY)
}

/// Encoded metadata values: `(type, bytes)`.
fn v_u8(x: u8) -> (u32, Vec<u8>) {
    (T_U8, vec![x])
}
fn v_u32(x: u32) -> (u32, Vec<u8>) {
    (T_U32, x.to_le_bytes().to_vec())
}
fn v_i32(x: i32) -> (u32, Vec<u8>) {
    (T_I32, x.to_le_bytes().to_vec())
}
fn v_u64(x: u64) -> (u32, Vec<u8>) {
    (T_U64, x.to_le_bytes().to_vec())
}
fn v_i64(x: i64) -> (u32, Vec<u8>) {
    (T_I64, x.to_le_bytes().to_vec())
}
fn v_f32(x: f32) -> (u32, Vec<u8>) {
    (T_F32, x.to_le_bytes().to_vec())
}
fn v_f64(x: f64) -> (u32, Vec<u8>) {
    (T_F64, x.to_le_bytes().to_vec())
}
fn v_bool(b: bool) -> (u32, Vec<u8>) {
    (T_BOOL, vec![b as u8])
}
fn v_str(s: &str) -> (u32, Vec<u8>) {
    let mut out = vec![];
    put_str(&mut out, s);
    (T_STRING, out)
}
/// An array of values of one type.
fn v_array(elem: u32, items: &[(u32, Vec<u8>)]) -> (u32, Vec<u8>) {
    let mut out = elem.to_le_bytes().to_vec();
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for (ty, bytes) in items {
        assert_eq!(*ty, elem);
        out.extend_from_slice(bytes);
    }
    (T_ARRAY, out)
}
fn v_strs<S: AsRef<str>>(items: &[S]) -> (u32, Vec<u8>) {
    v_array(T_STRING, &items.iter().map(|s| v_str(s.as_ref())).collect::<Vec<_>>())
}

/// Sets `key` (replacing its value where it is, or appending it).
fn upsert(kvs: &mut Vec<Kv>, key: &str, (ty, value): (u32, Vec<u8>)) {
    match kvs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => {
            kv.ty = ty;
            kv.value = value;
        }
        None => kvs.push(Kv { key: key.into(), ty, value }),
    }
}

/// `(elements per block, bytes per block)` of the ggml types flint reads (ggml's own table).
fn ggml_block(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        8 => (32, 34),
        12 => (256, 144),
        14 => (256, 210),
        _ => return None,
    })
}

/// Bytes of a tensor of `dims` and type `ty`, rounding a partial block up.
fn tensor_bytes(dims: &[u64], ty: u32) -> u64 {
    let n = dims.iter().fold(1u64, |a, &d| a.saturating_mul(d));
    let (per, bytes) = ggml_block(ty).unwrap_or((1, 1));
    n.div_ceil(per).saturating_mul(bytes)
}

// ------------------------------------------------------------------------------------------------
// Mutations

/// An offset of the header, most often in the metadata's first few KB or in the tensor infos.
fn biased_offset(fx: &Fixture, len: usize, rng: &mut Rng) -> usize {
    if len == 0 {
        return 0;
    }
    let at = match rng.below(100) {
        0..=34 => rng.below(fx.kv_end.min(4096)),
        35..=79 => rng.range(fx.kv_end, fx.ti_end),
        80..=89 => rng.below(fx.data_offset),
        _ => rng.below(len),
    };
    at.min(len - 1)
}

/// A boundary value for an integer field that holds `old`.
fn interesting(rng: &mut Rng, old: u64, wide: bool) -> u64 {
    let max = if wide { u64::MAX } else { u64::from(u32::MAX) };
    let v = match rng.below(17) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => old.wrapping_sub(1),
        4 => old.wrapping_add(1),
        5 => old.wrapping_mul(2),
        6 => old.wrapping_add(32),
        7 => old / 2,
        8 => 1 << 31,
        9 => 1 << 32,
        10 => 1 << 40,
        11 => 1 << 62,
        12 => 1 << 63,
        13 => max,
        14 => max - 31,
        15 => max / 2,
        _ => rng.next_u64(),
    };
    v & max
}

fn read_field(b: &[u8], f: &Field) -> u64 {
    if f.wide {
        u64::from_le_bytes(b[f.at..f.at + 8].try_into().unwrap())
    } else {
        u64::from(u32::from_le_bytes(b[f.at..f.at + 4].try_into().unwrap()))
    }
}

fn write_field(b: &mut [u8], f: &Field, v: u64) {
    if f.wide {
        b[f.at..f.at + 8].copy_from_slice(&v.to_le_bytes());
    } else {
        b[f.at..f.at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    }
}

/// Sets field `f` of `b` to `v`, saying what changed.
fn set_field_to(b: &mut [u8], f: &Field, v: u64) -> String {
    let old = read_field(b, f);
    write_field(b, f, v);
    format!("set {} @{} from {old} to {v}", f.what, f.at)
}

fn field_named(fx: &Fixture, what: &str) -> Field {
    fx.fields.iter().find(|f| f.what == what).unwrap_or_else(|| panic!("{}: no field {what}", fx.name)).clone()
}

/// One byte-level mutation of `b` (a file derived from `fx`), described.
fn byte_mutation(b: &mut Vec<u8>, fx: &Fixture, rng: &mut Rng) -> String {
    if b.is_empty() {
        b.push(rng.next_u64() as u8);
        return "a one-byte file".into();
    }
    let len = b.len();
    match rng.below(100) {
        // Bit flips.
        0..=23 => {
            let mut parts = vec![];
            for _ in 0..1 + rng.below(4) {
                let at = biased_offset(fx, len, rng);
                let old = b[at];
                b[at] ^= 1 << rng.below(8);
                parts.push(format!("@{at} {old:#04x}->{:#04x} ({})", b[at], fx.describe(at)));
            }
            format!("flip bits {}", parts.join(", "))
        }
        // Bytes set to boundary values.
        24..=35 => {
            let mut parts = vec![];
            for _ in 0..1 + rng.below(3) {
                let at = biased_offset(fx, len, rng);
                let old = b[at];
                let random = rng.next_u64() as u8;
                b[at] = rng.pick(&[0x00, 0xFF, 0x7F, 0x80, 0x01, random]);
                parts.push(format!("@{at} {old:#04x}->{:#04x} ({})", b[at], fx.describe(at)));
            }
            format!("set bytes {}", parts.join(", "))
        }
        // An integer field of the header.
        36..=61 => {
            let fields: Vec<&Field> = fx.fields.iter().filter(|f| f.at + if f.wide { 8 } else { 4 } <= len).collect();
            match fields.is_empty() {
                true => {
                    b.truncate(len / 2);
                    format!("truncate to {} bytes", len / 2)
                }
                false => {
                    let f = fields[rng.below(fields.len())];
                    let v = interesting(rng, read_field(b, f), f.wide);
                    set_field_to(b, f, v)
                }
            }
        }
        // Truncation: in the header, at a field's edge, or anywhere.
        62..=71 => {
            let at = match rng.below(10) {
                0..=4 => biased_offset(fx, len, rng),
                5..=6 => {
                    let f = rng.pick(&fx.fields);
                    (f.at + rng.below(3)).saturating_sub(1).min(len - 1)
                }
                _ => rng.below(len),
            };
            b.truncate(at);
            format!("truncate to {at} bytes (in {})", fx.describe(at))
        }
        // A range copied elsewhere.
        72..=79 => {
            let from = biased_offset(fx, len, rng);
            let n = (1 + rng.below(64)).min(len - from);
            let to = biased_offset(fx, len, rng);
            let copy = b[from..from + n].to_vec();
            b.splice(to..to, copy);
            format!("copy {n} bytes from @{from} ({}) to @{to} ({})", fx.describe(from), fx.describe(to))
        }
        // A range deleted.
        80..=87 => {
            let at = biased_offset(fx, len, rng);
            let n = (1 + rng.below(64)).min(len - at);
            b.drain(at..at + n);
            format!("delete {n} bytes at @{at} ({})", fx.describe(at))
        }
        // Random bytes inserted.
        88..=91 => {
            let at = biased_offset(fx, len, rng);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, bytes.iter().copied());
            format!("insert {n} random bytes {bytes:02x?} at @{at} ({})", fx.describe(at))
        }
        // NaN or infinity in a tensor's data (an f16 scale of a block, or an f32 value).
        _ => {
            let t = rng.pick(&fx.tis);
            let (per, block) = ggml_block(t.ty).unwrap_or((1, 4));
            let blocks = (tensor_bytes(&t.dims, t.ty) / block).max(1);
            let at = fx.data_offset + (t.offset + rng.below(blocks as usize) as u64 * block) as usize;
            let value: &[u8] = match (per, block) {
                (1, 4) => rng.pick(&[&[0, 0, 0xC0, 0x7F][..], &[0, 0, 0x80, 0x7F], &[0, 0, 0x80, 0xFF]]),
                _ => rng.pick(&[&[0x00, 0x7E][..], &[0x00, 0x7C], &[0x00, 0xFC], &[0xFF, 0x7B]]),
            };
            if at + value.len() > len {
                b.truncate(at.min(len));
                return format!("truncate to {} bytes", at.min(len));
            }
            b[at..at + value.len()].copy_from_slice(value);
            format!("write {value:02x?} into the data of `{}` @{at}", t.name)
        }
    }
}

/// Names a renamed tensor may take: others' names, ones the config and loader look for.
fn rename_targets(fx: &Fixture, i: usize) -> Vec<String> {
    let t = &fx.tis[i];
    let other = &fx.tis[(i + 1) % fx.tis.len()].name;
    let base = t.name.strip_suffix(".weight").unwrap_or(&t.name).to_string();
    let layers = fx.block_count();
    vec![
        other.clone(),
        "output.weight".into(),
        "token_embd.weight".into(),
        "rope_freqs.weight".into(),
        "blk.0.attn_q.bias".into(),
        "blk.0.ffn_gate_inp.weight".into(),
        "blk.0.ffn_gate.weight".into(),
        "blk.0.ffn_gate_exps.weight".into(),
        "blk.0.ffn_gate_shexp.weight".into(),
        "blk.0.ffn_gate_inp_shexp.weight".into(),
        "blk.0.attn_q_norm.weight".into(),
        format!("blk.{layers}.attn_q.weight"),
        base.clone(),
        format!("{base}.bias"),
        format!("{}x", t.name),
        String::new(),
        "\u{e9}\u{0}\u{ffff}".into(),
    ]
}

/// Tensor `i` with dimensions changed one way or another.
fn mutate_dims(fx: &Fixture, i: usize, rng: &mut Rng) -> (String, Vec<u64>) {
    let mut d = fx.tis[i].dims.clone();
    let k = rng.below(d.len());
    let what = match rng.below(12) {
        0 if d.len() >= 2 => {
            d.swap(0, 1);
            "swap the first two"
        }
        0 | 1 => {
            d.push(1);
            "append a 1"
        }
        2 => {
            d.insert(0, 1);
            "prepend a 1"
        }
        3 if d.len() >= 2 => {
            d.pop();
            "drop the last"
        }
        3 | 4 if d.len() >= 2 => {
            let merged = d[0] * d[1];
            d.splice(0..2, [merged]);
            "merge the first two"
        }
        5 => {
            d[k] *= 2;
            "double one"
        }
        6 => {
            d[k] /= 2;
            "halve one"
        }
        7 => {
            d[k] = 0;
            "zero one"
        }
        8 => {
            d[k] += 32;
            "grow one by 32"
        }
        9 => {
            d = fx.tis[rng.below(fx.tis.len())].dims.clone();
            "copy another tensor's"
        }
        10 => {
            d = vec![1; 5];
            "five"
        }
        _ => {
            d[k] = 1 << (32 + rng.below(31));
            "make one huge"
        }
    };
    (format!("{what} dims"), d)
}

/// The data section re-laid for tensor infos whose sizes changed: each tensor keeps its old
/// bytes (cut, or padded with random bytes) at a fresh aligned offset.
fn relayout(fx: &Fixture, tis: &mut [Ti], rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![];
    let old = fx.data();
    for t in tis.iter_mut() {
        let n = tensor_bytes(&t.dims, t.ty).min(1 << 22) as usize;
        let start = (t.offset as usize).min(old.len());
        let mut blob = old[start..(start + n).min(old.len())].to_vec();
        while blob.len() < n {
            blob.push(rng.next_u64() as u8);
        }
        t.offset = data.len() as u64;
        data.extend_from_slice(&blob);
        data.resize(data.len().next_multiple_of(fx.alignment), 0);
    }
    data
}

/// A systematic or random mutation of a fixture.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// The ggml type of a random tensor set to this id, in place.
    Type(u32),
    /// The dimension count of a random tensor set to this, in place.
    NDims(u32),
    /// The tensor count (`true`) or metadata count set to the `n`th boundary value.
    Count(bool, usize),
    Version(u32),
    /// `general.architecture` set to `ARCHES[n / 2]`, the `{arch}.` keys renamed when `n` is odd.
    Arch(usize),
    DeleteKv(usize),
    DeleteTensor(usize),
    /// A numeric metadata value set to its `n`th boundary value.
    KvValue(usize, usize),
    /// A numeric metadata value rewritten as its `n`th other type.
    KvRetype(usize, usize),
    /// An embedded tokenizer added, then broken the `n`th way.
    Tokenizer(usize),
    Random,
}

const TYPE_IDS: [u32; 52] = {
    let mut ids = [0u32; 52];
    let mut i = 0;
    while i < 46 {
        ids[i] = i as u32;
        i += 1;
    }
    ids[46] = 46;
    ids[47] = 63;
    ids[48] = 255;
    ids[49] = 1000;
    ids[50] = 1 << 16;
    ids[51] = u32::MAX;
    ids
};
const N_DIMS: [u32; 9] = [0, 1, 2, 3, 4, 5, 8, 255, u32::MAX];
const VERSIONS: [u32; 6] = [0, 1, 2, 4, 3 << 24, u32::MAX];
const ARCHES: [&str; 9] = ["llama", "mixtral", "qwen2moe", "qwen3moe", "olmoe", "granitemoe", "gpt2", "", "LLAMA"];
const KV_VALUES: usize = 11;
const KV_RETYPES: usize = 12;
const TOKENIZER_VARIANTS: usize = 50;

fn plans(fx: &Fixture) -> Vec<Plan> {
    let mut p = vec![];
    p.extend(TYPE_IDS.iter().map(|&t| Plan::Type(t)));
    p.extend(N_DIMS.iter().map(|&n| Plan::NDims(n)));
    p.extend((0..8).flat_map(|n| [Plan::Count(true, n), Plan::Count(false, n)]));
    p.extend(VERSIONS.iter().map(|&v| Plan::Version(v)));
    p.extend((0..ARCHES.len() * 2).map(Plan::Arch));
    p.extend((0..fx.kvs.len()).map(Plan::DeleteKv));
    p.extend((0..fx.tis.len()).map(Plan::DeleteTensor));
    for (k, kv) in fx.kvs.iter().enumerate().filter(|(_, kv)| is_numeric(kv.ty)) {
        let values = if kv.ty == T_BOOL { 4 } else { KV_VALUES };
        p.extend((0..values).map(|n| Plan::KvValue(k, n)));
        p.extend((0..KV_RETYPES).map(|n| Plan::KvRetype(k, n)));
    }
    p.extend((0..TOKENIZER_VARIANTS).map(Plan::Tokenizer));
    if !fx.kquant {
        p.extend((0..RANDOM_PER_FIXTURE).map(|_| Plan::Random));
        return p;
    }
    // Every KQUANT_STRIDE-th plan of each kind, counted across the kind's sweeps (so the values
    // kept differ from key to key), from an offset of the fixture's own.
    let mut total: BTreeMap<&str, usize> = BTreeMap::new();
    p.iter().for_each(|plan| *total.entry(plan.kind()).or_default() += 1);
    let offset = fnv(&fx.name) as usize % KQUANT_STRIDE;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    p.retain(|plan| {
        let i = seen.entry(plan.kind()).or_default();
        *i += 1;
        (*i - 1) % KQUANT_STRIDE == offset % total[plan.kind()].min(KQUANT_STRIDE)
    });
    p.extend((0..KQUANT_RANDOM).map(|_| Plan::Random));
    p
}

impl Plan {
    fn kind(&self) -> &'static str {
        match self {
            Plan::Type(_) => "ggml type",
            Plan::NDims(_) => "dimension count",
            Plan::Count(..) => "header count",
            Plan::Version(_) => "version",
            Plan::Arch(_) => "architecture",
            Plan::DeleteKv(_) => "metadata dropped",
            Plan::DeleteTensor(_) => "tensor dropped",
            Plan::KvValue(..) => "metadata value",
            Plan::KvRetype(..) => "metadata type",
            Plan::Tokenizer(_) => "tokenizer",
            Plan::Random => "random",
        }
    }
}

/// The mutated file of `plan` on `fx`, described.
fn mutate(fx: &Fixture, plan: Plan, rng: &mut Rng) -> (String, Vec<u8>) {
    let mut b = fx.bytes.clone();
    let desc = match plan {
        Plan::Type(id) => {
            let t = rng.pick(&fx.tis);
            set_field_to(&mut b, &field_named(fx, &format!("the ggml type of `{}`", t.name)), id.into())
        }
        Plan::NDims(n) => {
            let t = rng.pick(&fx.tis);
            set_field_to(&mut b, &field_named(fx, &format!("the dimension count of `{}`", t.name)), n.into())
        }
        Plan::Count(tensors, n) => {
            let f = field_named(fx, if tensors { "the tensor count" } else { "the metadata count" });
            let old = read_field(&b, &f);
            let v =
                [0, 1, old.wrapping_sub(1), old.wrapping_add(1), old.wrapping_mul(2), 1 << 32, u64::MAX / 2, u64::MAX]
                    [n];
            set_field_to(&mut b, &f, v)
        }
        Plan::Version(v) => set_field_to(&mut b, &field_named(fx, "the version"), v.into()),
        Plan::Arch(n) => {
            let (new, rename) = (ARCHES[n / 2], n % 2 == 1);
            let old = fx.arch();
            let mut kvs = fx.kvs.clone();
            upsert(&mut kvs, "general.architecture", v_str(new));
            if rename {
                for kv in &mut kvs {
                    if let Some(rest) = kv.key.strip_prefix(&format!("{old}.")) {
                        kv.key = format!("{new}.{rest}");
                    }
                }
            }
            b = fx.rebuild(&kvs, &fx.tis);
            format!("architecture `{old}` -> `{new}`{}", if rename { ", keys renamed" } else { "" })
        }
        Plan::DeleteKv(k) => {
            let mut kvs = fx.kvs.clone();
            let gone = kvs.remove(k);
            b = fx.rebuild(&kvs, &fx.tis);
            format!("drop metadata `{}`", gone.key)
        }
        Plan::DeleteTensor(i) => {
            let mut tis = fx.tis.clone();
            let gone = tis.remove(i);
            b = fx.rebuild(&fx.kvs, &tis);
            format!("drop the info of tensor `{}`", gone.name)
        }
        Plan::KvValue(k, n) => {
            let mut kvs = fx.kvs.clone();
            let desc = kv_value(&mut kvs[k], n);
            b = fx.rebuild(&kvs, &fx.tis);
            desc
        }
        Plan::KvRetype(k, n) => {
            let mut kvs = fx.kvs.clone();
            let desc = kv_retype(&mut kvs[k], n, fx.block_count());
            b = fx.rebuild(&kvs, &fx.tis);
            desc
        }
        Plan::Tokenizer(n) => return tokenizer_case(fx, n, rng),
        Plan::Random => return random_case(fx, rng),
    };
    (desc, b)
}

/// The `n`th boundary value of a numeric metadata value.
fn kv_value(kv: &mut Kv, n: usize) -> String {
    let old = kv_int(kv);
    let (ty, value) = match kv.ty {
        T_BOOL => (T_BOOL, vec![[0u8, 1, 2, 0xFF][n]]),
        T_F32 | T_F64 => {
            let f = kv_f32(kv);
            let x =
                [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-45, 3e38, f * 2.0, f / 1000.0, 1.0][n];
            match kv.ty {
                T_F32 => v_f32(x),
                _ => v_f64(x.into()),
            }
        }
        ty => {
            let width = match ty {
                T_U8 | T_I8 => 1,
                T_U16 | T_I16 => 2,
                T_U32 | T_I32 => 4,
                _ => 8,
            };
            let max = if width == 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
            let x = [
                0,
                1,
                2,
                3,
                old.wrapping_sub(1),
                old.wrapping_add(1),
                old.wrapping_mul(2),
                old.wrapping_mul(64),
                1 << 16,
                1 << 31,
                u64::MAX,
            ][n] & max;
            (ty, x.to_le_bytes()[..width].to_vec())
        }
    };
    let desc = format!("metadata `{}` (type {}) {:02x?} -> {value:02x?}", kv.key, kv.ty, kv.value);
    kv.ty = ty;
    kv.value = value;
    desc
}

/// A numeric metadata value rewritten as another type (or a per-layer array, or a string).
fn kv_retype(kv: &mut Kv, n: usize, layers: u64) -> String {
    let v = kv_int(kv);
    let layers = layers.min(64);
    let (what, val) = match n {
        0 => ("uint8", v_u8(v as u8)),
        1 => ("int32", v_i32(v as i32)),
        2 => ("uint64", v_u64(v)),
        3 => ("int64 -1", v_i64(-1)),
        4 => ("float32", v_f32(kv_f32(kv))),
        5 => ("float64", v_f64(kv_f32(kv).into())),
        6 => ("bool", v_bool(true)),
        7 => ("string", v_str(&v.to_string())),
        8 => ("a per-layer array of equal values", v_array(T_U32, &vec![v_u32(v as u32); layers as usize])),
        9 => ("a per-layer array of different values", {
            v_array(T_U32, &(0..layers).map(|l| v_u32(v.wrapping_add(l) as u32)).collect::<Vec<_>>())
        }),
        10 => ("an empty array", v_array(T_U32, &[])),
        _ => ("an array of strings", v_strs(&[v.to_string()])),
    };
    let desc = format!("metadata `{}` (type {}) rewritten as {what}", kv.key, kv.ty);
    (kv.ty, kv.value) = val;
    desc
}

/// The tokens of a small valid `gpt2` vocabulary of `vocab` tokens: `<|endoftext|>` (control),
/// `a`..`z`, `Ġ`, `ab`, `Ġa`, then fillers `x30`, `x31`, ...
fn base_tokens(vocab: usize) -> Vec<String> {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    tokens.extend(('a'..='z').map(String::from));
    tokens.extend(["\u{120}".into(), "ab".into(), "\u{120}a".into()]);
    while tokens.len() < vocab {
        tokens.push(format!("x{}", tokens.len()));
    }
    tokens.truncate(vocab.max(1));
    tokens
}

/// The metadata of a `gpt2` tokenizer: its tokens, their types, its merges, BOS = EOS = 0, and a
/// chat template.
fn tokenizer_kvs(tokens: &[String], types: &[i32], merges: &[&str]) -> Vec<Kv> {
    let kv = |key: &str, (ty, value): (u32, Vec<u8>)| Kv { key: key.into(), ty, value };
    vec![
        kv("tokenizer.ggml.model", v_str("gpt2")),
        kv("tokenizer.ggml.pre", v_str("gpt-2")),
        kv("tokenizer.ggml.tokens", v_strs(tokens)),
        kv("tokenizer.ggml.token_type", v_array(T_I32, &types.iter().map(|&t| v_i32(t)).collect::<Vec<_>>())),
        kv("tokenizer.ggml.merges", v_strs(merges)),
        kv("tokenizer.ggml.bos_token_id", v_u32(0)),
        kv("tokenizer.ggml.eos_token_id", v_u32(0)),
        kv("tokenizer.ggml.add_bos_token", v_bool(true)),
        kv("tokenizer.chat_template", v_str("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}")),
    ]
}

/// The fixture with a tokenizer added and then broken the `n`th way (`n == 0`: left valid).
fn tokenizer_case(fx: &Fixture, n: usize, rng: &mut Rng) -> (String, Vec<u8>) {
    let vocab = fx.vocab();
    let mut tokens = base_tokens(vocab);
    let mut types: Vec<i32> = (0..tokens.len()).map(|i| if i == 0 { 3 } else { 1 }).collect();
    let mut merges = vec!["a b", "\u{120} a"];
    // Variants that change the vocabulary and keep its parts consistent.
    let what = match n {
        18 => {
            // A control token the chat template writes, with an id past the embedding.
            tokens.extend((0..64).map(|i| format!("y{i}")));
            tokens.push("<|user|>".into());
            types.resize(tokens.len(), 1);
            *types.last_mut().unwrap() = 3;
            Some("more tokens than the embedding, one a control token in the prompt")
        }
        19 => {
            tokens.truncate(vocab / 2);
            types.truncate(vocab / 2);
            Some("fewer tokens than the embedding")
        }
        20 => {
            tokens.iter_mut().for_each(|t| *t = "<|a|>".into());
            types.iter_mut().for_each(|t| *t = 3);
            merges.clear();
            Some("every token the same control token")
        }
        21 => {
            tokens.iter_mut().for_each(String::clear);
            merges.clear();
            Some("every token empty")
        }
        22 => {
            tokens.iter_mut().skip(30).enumerate().for_each(|(i, t)| *t = format!("\u{e9}\n {i}\u{0}\u{1F600}"));
            Some("tokens outside the byte-level alphabet")
        }
        _ => None,
    };
    // Any tokenizer the fixture has is replaced.
    let mut kvs: Vec<Kv> = fx.kvs.iter().filter(|kv| !kv.key.starts_with("tokenizer.")).cloned().collect();
    kvs.extend(tokenizer_kvs(&tokens, &types, &merges));
    let types_of = |ty: i32| v_array(T_I32, &vec![v_i32(ty); vocab]);
    let template = "tokenizer.chat_template";
    let (what, key, val): (&str, &str, Option<(u32, Vec<u8>)>) = match (what, n) {
        (Some(what), _) => (what, "", None),
        (None, 0) => ("valid", "", None),
        (None, 1) => ("model llama", "tokenizer.ggml.model", Some(v_str("llama"))),
        (None, 2) => ("model empty", "tokenizer.ggml.model", Some(v_str(""))),
        (None, 3) => ("model a number", "tokenizer.ggml.model", Some(v_u32(2))),
        (None, 4) => ("pre unknown", "tokenizer.ggml.pre", Some(v_str("mystery"))),
        (None, 5) => ("pre qwen2", "tokenizer.ggml.pre", Some(v_str("qwen2"))),
        (None, 6) => ("pre llama3", "tokenizer.ggml.pre", Some(v_str("llama3"))),
        (None, 7) => ("pre tekken", "tokenizer.ggml.pre", Some(v_str("tekken"))),
        (None, 8) => ("pre gpt-4o", "tokenizer.ggml.pre", Some(v_str("gpt-4o"))),
        (None, 9) => ("pre smollm", "tokenizer.ggml.pre", Some(v_str("smollm"))),
        (None, 10) => ("pre a bool", "tokenizer.ggml.pre", Some(v_bool(false))),
        (None, 11) => ("merges dropped", "tokenizer.ggml.merges", None),
        (None, 12) => ("a merge of one token", "tokenizer.ggml.merges", Some(v_strs(&["ab"]))),
        (None, 13) => ("a merge of unknown tokens", "tokenizer.ggml.merges", Some(v_strs(&["q zz"]))),
        (None, 14) => ("a merge with two spaces", "tokenizer.ggml.merges", Some(v_strs(&["a  b"]))),
        (None, 15) => ("merges a string", "tokenizer.ggml.merges", Some(v_str("a b"))),
        (None, 16) => ("tokens numbers", "tokenizer.ggml.tokens", Some(v_array(T_U32, &vec![v_u32(7); vocab]))),
        (None, 17) => ("tokens empty", "tokenizer.ggml.tokens", Some(v_strs::<&str>(&[]))),
        (None, 23) => ("token types short", "tokenizer.ggml.token_type", Some(v_array(T_I32, &[v_i32(1)]))),
        (None, 24) => ("token types strings", "tokenizer.ggml.token_type", Some(v_strs(&vec!["1"; vocab]))),
        (None, 25) => ("token types all control", "tokenizer.ggml.token_type", Some(types_of(3))),
        (None, 26) => ("token types all user-defined", "tokenizer.ggml.token_type", Some(types_of(4))),
        (None, 27) => ("token types out of range", "tokenizer.ggml.token_type", Some(types_of(i32::MIN))),
        (None, 28) => ("bos outside the vocabulary", "tokenizer.ggml.bos_token_id", Some(v_u32(vocab as u32))),
        (None, 29) => ("bos huge", "tokenizer.ggml.bos_token_id", Some(v_u64(u64::MAX))),
        (None, 30) => ("eos negative", "tokenizer.ggml.eos_token_id", Some(v_i32(-1))),
        (None, 31) => ("add_bos a byte", "tokenizer.ggml.add_bos_token", Some(v_u8(1))),
        (None, 32) => ("template unclosed", template, Some(v_str("{% for m in messages %}{{ m.content }}"))),
        (None, 33) => ("template raises", template, Some(v_str("{{ raise_exception('no') }}"))),
        (None, 34) => ("template a number", template, Some(v_u32(3))),
        (None, 35) => {
            ("template recursive", template, { Some(v_str("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")) })
        }
        (None, 36) => ("template a long loop", template, Some(v_str("{% for i in range(1000000000) %}x{% endfor %}"))),
        (None, 37) => ("template empty", template, Some(v_str(""))),
        _ => ("valid, then bytes changed", "", None),
    };
    if !key.is_empty() {
        kvs.retain(|kv| kv.key != key);
        if let Some(v) = val {
            upsert(&mut kvs, key, v);
        }
    }
    let mut b = fx.rebuild(&kvs, &fx.tis);
    let mut desc = format!("tokenizer added, {what}");
    if n >= 38 {
        let derived = Fixture::parse(fx.name.clone(), b.clone());
        for _ in 0..1 + rng.below(2) {
            desc += &format!("; {}", byte_mutation(&mut b, &derived, rng));
        }
    }
    (desc, b)
}

/// Random mutations: structural ones (rebuilt through the writer) or byte-level ones, stacked.
fn random_case(fx: &Fixture, rng: &mut Rng) -> (String, Vec<u8>) {
    let i = rng.below(fx.tis.len());
    let name = fx.tis[i].name.clone();
    let roll = rng.below(100);
    let (mut desc, mut b) = match roll {
        0..=54 => (String::new(), fx.bytes.clone()),
        55..=64 => {
            let mut tis = fx.tis.clone();
            let (what, dims) = mutate_dims(fx, i, rng);
            let desc = format!("{what} of `{name}`: {:?} -> {dims:?}", tis[i].dims);
            tis[i].dims = dims;
            match rng.percent(50) {
                true => {
                    let data = relayout(fx, &mut tis, rng);
                    (desc + ", data re-laid", build(fx.version, &fx.kvs, &tis, fx.alignment, &data))
                }
                false => (desc, fx.rebuild(&fx.kvs, &tis)),
            }
        }
        65..=71 => {
            let mut tis = fx.tis.clone();
            let new = rng.pick(&rename_targets(fx, i));
            tis[i].name = new.clone();
            (format!("rename tensor `{name}` to {new:?}"), fx.rebuild(&fx.kvs, &tis))
        }
        72..=74 => {
            let mut tis = fx.tis.clone();
            let j = rng.below(tis.len());
            let other = tis[j].name.clone();
            tis[i].name = other.clone();
            tis[j].name = name.clone();
            (format!("swap the names of `{name}` and `{other}`"), fx.rebuild(&fx.kvs, &tis))
        }
        75..=80 => {
            let mut tis = fx.tis.clone();
            let ty = rng.pick(&[0, 1, 2, 3, 8, 12, 14, 30]);
            let old = tis[i].ty;
            tis[i].ty = ty;
            let data = relayout(fx, &mut tis, rng);
            let desc = format!("retype `{name}` from {old} to {ty}, data re-laid");
            (desc, build(fx.version, &fx.kvs, &tis, fx.alignment, &data))
        }
        81..=82 => {
            let mut tis = fx.tis.clone();
            let mut copy = tis[i].clone();
            let renamed = rng.percent(50);
            if renamed {
                copy.name = format!("{name}.copy");
            }
            tis.insert(rng.below(tis.len() + 1), copy);
            (format!("duplicate the info of `{name}`{}", if renamed { " renamed" } else { "" }), {
                fx.rebuild(&fx.kvs, &tis)
            })
        }
        83..=84 => {
            let field = field_named(fx, &format!("the data offset of `{name}`"));
            let other = rng.pick(&fx.tis).offset;
            let data_len = fx.data().len() as u64;
            let v = rng.pick(&[
                0,
                other,
                fx.tis[i].offset + fx.alignment as u64,
                fx.tis[i].offset.wrapping_sub(fx.alignment as u64),
                fx.tis[i].offset + 1,
                data_len,
                data_len.next_multiple_of(32),
                u64::MAX - 31,
                1 << 63,
            ]);
            let mut b = fx.bytes.clone();
            (set_field_to(&mut b, &field, v), b)
        }
        85..=92 => {
            let mut kvs = fx.kvs.clone();
            let desc = insert_kv(fx, &mut kvs, rng);
            (desc, fx.rebuild(&kvs, &fx.tis))
        }
        _ => {
            let mut kvs = fx.kvs.clone();
            let numeric: Vec<usize> = (0..kvs.len()).filter(|&k| is_numeric(kvs[k].ty)).collect();
            let k = rng.pick(&numeric);
            let desc = match rng.percent(50) {
                true => {
                    let n = rng.below(if kvs[k].ty == T_BOOL { 4 } else { KV_VALUES });
                    kv_value(&mut kvs[k], n)
                }
                false => kv_retype(&mut kvs[k], rng.below(KV_RETYPES), fx.block_count()),
            };
            (desc, fx.rebuild(&kvs, &fx.tis))
        }
    };
    let stacked = match roll {
        0..=54 => 1 + usize::from(rng.percent(30)) + usize::from(rng.percent(10)),
        _ => usize::from(rng.percent(25)),
    };
    for _ in 0..stacked {
        let d = byte_mutation(&mut b, fx, rng);
        desc = if desc.is_empty() { d } else { format!("{desc}; {d}") };
    }
    (desc, b)
}

/// A metadata key the config reads, added (or replaced) with an odd value.
fn insert_kv(fx: &Fixture, kvs: &mut Vec<Kv>, rng: &mut Rng) -> String {
    let a = fx.arch();
    let layers = fx.block_count().min(64) as usize;
    let k = |s: &str| format!("{a}.{s}");
    let choices: Vec<(String, (u32, Vec<u8>))> = vec![
        ("general.alignment".into(), v_u32(rng.pick(&[0, 1, 2, 8, 16, 48, 64, 4096, 1 << 31]))),
        ("general.alignment".into(), v_u64(rng.pick(&[1 << 40, 1 << 63, u64::MAX]))),
        ("general.alignment".into(), v_i32(-32)),
        ("general.alignment".into(), v_str("32")),
        (k("expert_gating_func"), v_u32(rng.pick(&[0, 1, 2]))),
        (k("rope.scaling.type"), v_str(rng.pick(&["linear", "none", "yarn"]))),
        (k("attn_logit_softcapping"), v_f32(rng.pick(&[0.0, 30.0, f32::NAN]))),
        (k("attention.key_length"), v_u32(rng.pick(&[0, 1, 7, 16, 64, 1 << 20, u32::MAX]))),
        (k("attention.value_length"), v_u32(rng.pick(&[0, 16, 32, u32::MAX]))),
        (k("expert_feed_forward_length"), v_u32(rng.pick(&[0, 1, 16, 64, u32::MAX]))),
        (k("expert_shared_feed_forward_length"), v_u32(rng.pick(&[0, 32, 64, u32::MAX]))),
        (k("expert_count"), v_u32(rng.pick(&[0, 1, 2, 4, 8, 9, 1 << 20, u32::MAX]))),
        (k("expert_used_count"), v_u32(rng.pick(&[0, 1, 2, 8, 9, u32::MAX]))),
        (k("vocab_size"), v_u32(rng.pick(&[0, 255, 257, u32::MAX]))),
        (k("logit_scale"), v_f32(rng.pick(&[0.0, -1.0, f32::INFINITY, f32::NAN]))),
        (k("embedding_scale"), v_f32(rng.pick(&[0.0, f32::NAN, 1e38]))),
        (k("attention.scale"), v_f32(rng.pick(&[0.0, f32::NAN, -1.0]))),
        (k("expert_weights_norm"), rng.pick(&[v_bool(true), v_bool(false), v_u8(1)])),
        (k("context_length"), v_u64(rng.pick(&[0, 1, 2, 1 << 40, u64::MAX]))),
        (k("block_count"), v_u64(rng.pick(&[0, 2, 3, 64, 1 << 20, 1 << 40, u64::MAX]))),
        (k("attention.head_count_kv"), {
            v_array(T_U32, &(0..layers).map(|l| v_u32(1 + (l % 2) as u32)).collect::<Vec<_>>())
        }),
        (k("feed_forward_length"), v_array(T_U32, &vec![v_u32(64); layers])),
        ("tokenizer.ggml.bos_token_id".into(), v_u32(rng.pick(&[255, 256, u32::MAX]))),
        ("tokenizer.ggml.eos_token_id".into(), v_i64(-1)),
        ("general.nested".into(), {
            let mut v = v_u32(1);
            for _ in 0..rng.range(1, 12) {
                v = v_array(v.0, &[v]);
            }
            v
        }),
    ];
    let (key, val) = rng.pick(&choices);
    let desc = format!("metadata `{key}` set to type {} {:02x?}", val.0, &val.1[..val.1.len().min(24)]);
    upsert(kvs, &key, val);
    desc
}

// ------------------------------------------------------------------------------------------------
// What each file goes through

/// How far a case got: the stage that failed and its message, or `None` for a file that loaded
/// and generated.
struct Outcome {
    failed: Option<(&'static str, String)>,
    /// Broken rules: an error without a message, disagreeing readers.
    problems: Vec<String>,
}

/// The message of an error, checked to name a problem.
fn message(e: &flint::Error, problems: &mut Vec<String>) -> String {
    let msg = e.to_string();
    let payload = msg.split_once(": ").map_or(msg.as_str(), |(_, rest)| rest).trim();
    if msg.trim().len() < 12
        || payload.is_empty()
        || payload.eq_ignore_ascii_case("error")
        || msg.trim_end().ends_with(':')
    {
        problems.push(format!("an error that names no problem: {msg:?} ({e:?})"));
    }
    msg
}

/// Runs `bytes` through the reader, the streamed header path and the CPU engine.
fn exercise(bytes: &[u8], path: &Path, cut: u64) -> Outcome {
    let mut problems = vec![];
    let failed = pipeline(bytes, path, cut, &mut problems).err().map(|(stage, e)| (stage, message(&e, &mut problems)));
    Outcome { failed, problems }
}

type Staged<T> = Result<T, (&'static str, flint::Error)>;

fn pipeline(bytes: &[u8], path: &Path, cut: u64, problems: &mut Vec<String>) -> Staged<()> {
    let len = bytes.len() as u64;
    let mem = GgufFile::from_bytes(Bytes::from(bytes.to_vec()));
    std::fs::write(path, bytes).expect("write the case file");
    let opened = ModelFiles::open(path);
    let file = match mem {
        Ok(file) => file,
        Err(e) => {
            let msg = message(&e, problems);
            match &opened {
                Ok(_) => problems.push(format!("rejected in memory ({msg}) but opened from a file")),
                // `GgufFile::open` names the file after the error's kind.
                Err(o) if o.to_string().replacen(&format!("{}: ", path.display()), "", 1) != msg => {
                    problems.push(format!("in memory: {msg}; from a file: {o}"));
                }
                Err(_) => {}
            }
            if GgufFile::from_header(bytes, len).is_ok() {
                problems.push(format!("from_header accepts the whole file that from_bytes rejects ({msg})"));
            }
            return Err(("parse", e));
        }
    };
    streamed_side(&file, bytes, cut, problems);

    let config = config_from_gguf(&file);
    let tokenizer = flint::tokenizer::gguf::from_gguf(&file);
    let first_error = match (&config, &tokenizer) {
        (Err(e), _) | (_, Err(e)) => Some(message(e, problems)),
        _ => None,
    };
    match (&opened, &first_error) {
        (Ok(_), Some(msg)) => problems.push(format!("ModelFiles::open accepts a file whose metadata fails: {msg}")),
        (Err(e), None) => problems.push(format!("ModelFiles::open fails ({e}) where each part succeeds in memory")),
        (Err(e), Some(msg)) if e.to_string() != *msg => {
            problems.push(format!("ModelFiles::open fails with {e}, in memory with {msg}"));
        }
        _ => {}
    }
    drop(file);
    if let Err(e) = config {
        return Err(("config", e));
    }
    if let Err(e) = tokenizer {
        return Err(("tokenizer", e));
    }
    let files = opened.map_err(|e| ("open", e))?;
    // What `flint info` and the GPU path work out from the config alone, before any weight is read.
    let _ = files.config.parameter_counts();
    let _ = flint::engine::build::sizes(&files.config, 4096, Default::default());
    let model = files.load_reference().map_err(|e| ("load", e))?;
    let mut generator = CpuGenerator::new(model);
    match &files.tokenizer {
        Some(tok) => {
            // A tokenizer without a chat template (the k-quant fixtures') encodes the text as it is.
            let text = match tok.chat_template {
                Some(_) => {
                    tok.apply_chat_template(&[Message::new("user", "ab a")], true).map_err(|e| ("template", e))?
                }
                None => "ab a".to_string(),
            };
            let mut prompt = tok.encode(&text, true).map_err(|e| ("encode", e))?;
            prompt.truncate(16);
            let options =
                GenerateOptions { max_tokens: 3, stop_token_ids: files.stop_token_ids(), ..Default::default() };
            flint::generate(&mut generator, tok, &prompt, &options, |_| ControlFlow::Continue(()))
                .map_err(|e| ("generate", e))?;
        }
        None => {
            let first = files.config.bos_token_id.unwrap_or(1);
            generator.start(&[first, 0], &SamplingParams::default(), 3).map_err(|e| ("generate", e))?;
            for _ in 0..3 {
                generator.next_token().map_err(|e| ("generate", e))?;
            }
        }
    }
    Ok(())
}

/// The streamed loader's CPU side on a file that parses: the header from a prefix that ends in
/// it (must be "truncated") and from one that holds it (must parse), then every tensor read
/// through a window of the data.
fn streamed_side(file: &GgufFile, bytes: &[u8], cut: u64, problems: &mut Vec<String>) {
    let len = bytes.len() as u64;
    let data_offset = file.data_offset();
    let inside = data_offset.saturating_sub(file.alignment()).min(len);
    if inside > 0 && data_offset <= len {
        let prefix = (cut % inside) as usize;
        match GgufFile::from_header(&bytes[..prefix], len) {
            Ok(_) => problems.push(format!("from_header accepts a prefix of {prefix} bytes inside the header")),
            Err(e) => {
                let msg = message(&e, problems);
                if !msg.contains("truncated") {
                    problems.push(format!("a prefix of {prefix} bytes inside the header gives {msg:?}"));
                }
            }
        }
    }
    let header = match GgufFile::from_header(&bytes[..data_offset.min(len) as usize], len) {
        Ok(h) => h,
        Err(e) => {
            let msg = message(&e, problems);
            return problems.push(format!("from_header rejects the header from_bytes accepts: {msg}"));
        }
    };
    let names = header.names();
    if names.is_empty() {
        return;
    }
    let (start, end) = match header.span_of(&names) {
        Ok(span) => span,
        Err(e) => {
            let msg = message(&e, problems);
            return problems.push(format!("span_of the tensors of a valid file fails: {msg}"));
        }
    };
    let window = header.window(start, Bytes::from(bytes[start as usize..end as usize].to_vec()));
    for name in &names {
        if let Err(e) = window.load_packed(name) {
            message(&e, problems);
        }
        if let Err(e) = window.load_f32(name) {
            message(&e, problems);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Running every case under the watchdog

struct Case {
    id: String,
    fixture: usize,
    plan: Plan,
    seed: u64,
}

impl Case {
    fn generate(&self, fixtures: &[Fixture]) -> (String, Vec<u8>, u64) {
        let mut rng = Rng(self.seed);
        let (desc, bytes) = mutate(&fixtures[self.fixture], self.plan, &mut rng);
        (desc, bytes, rng.next_u64())
    }
}

enum Ended {
    Done(Outcome),
    Panic { message: String, location: String, backtrace: Option<Backtrace> },
}

struct Finished {
    desc: String,
    len: usize,
    result: Ended,
}

fn run_from(
    cases: Arc<Vec<Case>>,
    fixtures: Arc<Vec<Fixture>>,
    first: usize,
    dir: PathBuf,
    tx: Sender<(usize, Finished)>,
) {
    for (i, case) in cases.iter().enumerate().skip(first) {
        let (desc, bytes, cut) = case.generate(&fixtures);
        let path = dir.join(format!("case-{i}.gguf"));
        LAST_PANIC.with(|p| p.borrow_mut().take());
        CASE.with(|c| c.set(i));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&bytes, &path, cut)));
        CASE.with(|c| c.set(usize::MAX));
        let _ = std::fs::remove_file(&path);
        let result = match result {
            Ok(outcome) => Ended::Done(outcome),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".into());
                let (location, backtrace) =
                    LAST_PANIC.with(|p| p.borrow_mut().take()).map_or(("?".into(), None), |(l, b)| (l, Some(b)));
                Ended::Panic { message, location, backtrace }
            }
        };
        if tx.send((i, Finished { desc, len: bytes.len(), result })).is_err() {
            return;
        }
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut paths = vec![];
    for (dir, suffix, kquant) in [(common::fixture(""), "-q4_0", false), (common::fixture_file("kquant"), "", true)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let gguf = entry.path().join("model.gguf");
            if name.ends_with(suffix) && gguf.is_file() {
                paths.push((name, gguf, kquant));
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|(name, path, kquant)| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let fx = Fixture { kquant, ..Fixture::parse(name, bytes) };
            // The writer reproduces the fixtures (zero padding), so a rebuilt file differs from its
            // fixture only as intended.
            if fx.rebuild(&fx.kvs, &fx.tis) != fx.bytes {
                eprintln!("note: {}: the test's writer does not reproduce it byte for byte", fx.name);
            }
            fx
        })
        .collect()
}

/// The first words of an error, numbers and quoted names blanked, to group errors by kind.
fn error_kind(stage: &str, msg: &str, path: &str) -> String {
    let msg = msg.replace(path, "<file>");
    let mut out = String::new();
    let mut quoted = false;
    for c in msg.chars() {
        match c {
            '`' => {
                quoted = !quoted;
                if quoted {
                    out.push_str("`_`");
                }
            }
            _ if quoted => {}
            '0'..='9' if out.ends_with('N') => {}
            '0'..='9' => out.push('N'),
            _ => out.push(c),
        }
    }
    let words: Vec<&str> = out.split_whitespace().take(7).collect();
    format!("{stage}: {}", words.join(" "))
}

#[test]
fn mutated_gguf_files_fail_with_named_errors() {
    install_panic_hook();
    let started = Instant::now();
    let fixtures = Arc::new(fixtures());
    assert!(!fixtures.is_empty(), "no GGUF fixtures found");
    let only: Option<Vec<String>> =
        std::env::var("FLINT_MUTATION_ONLY").ok().map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let mut cases = vec![];
    for (f, fx) in fixtures.iter().enumerate() {
        for (n, plan) in plans(fx).into_iter().enumerate() {
            let id = format!("{}#{n}", fx.name);
            let seed = SEED ^ fnv(&fx.name) ^ (n as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            if only.as_ref().is_none_or(|o| o.contains(&id)) {
                cases.push(Case { id, fixture: f, plan, seed });
            }
        }
    }
    let cases = Arc::new(cases);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();

    // A worker runs the cases in order; when one does not report within CASE_LIMIT (or asked
    // for a huge allocation and was parked), it is recorded and a fresh worker takes the rest.
    let mut finished: Vec<Option<Finished>> = (0..cases.len()).map(|_| None).collect();
    let mut stuck: Vec<(usize, String)> = vec![];
    let mut next = 0;
    'run: while next < cases.len() {
        let (tx, rx) = channel();
        let (c, f, d) = (cases.clone(), fixtures.clone(), dir_path.clone());
        let first = next;
        std::thread::Builder::new()
            .name(format!("mutation cases from {first}"))
            .spawn(move || run_from(c, f, first, d, tx))
            .unwrap();
        let mut case_started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((i, done)) => {
                    finished[i] = Some(done);
                    next = i + 1;
                    case_started = Instant::now();
                    if next == cases.len() {
                        break 'run;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let huge = HUGE.lock().unwrap().iter().any(|h| h.case == next);
                    if huge || case_started.elapsed() > CASE_LIMIT {
                        let why = match huge {
                            true => "asked for a huge allocation".to_string(),
                            false => format!("no result within {CASE_LIMIT:?} (hang)"),
                        };
                        stuck.push((next, why));
                        next += 1;
                        if stuck.iter().filter(|(_, why)| why.contains("hang")).count() >= MAX_HANGS {
                            break 'run;
                        }
                        continue 'run;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the case worker died at case {next} ({})", cases[next].id)
                }
            }
        }
    }
    let elapsed = started.elapsed();

    // The report.
    let mut ok = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    let mut failures: Vec<String> = vec![];
    // Per panic location: the message, the cases, and the first case's backtrace.
    let mut panics: BTreeMap<String, (String, Vec<String>, String)> = BTreeMap::new();
    let mut dump: Vec<usize> = vec![];
    let show = only.is_some();
    for (i, done) in finished.iter().enumerate() {
        let Some(done) = done else { continue };
        let case = &cases[i];
        let tally = by_kind.entry(case.plan.kind()).or_default();
        let label = format!("{} [{}] ({} bytes): {}", case.id, case.plan.kind(), done.len, done.desc);
        match &done.result {
            Ended::Done(outcome) => {
                match &outcome.failed {
                    None => {
                        ok += 1;
                        tally[0] += 1;
                    }
                    Some((stage, msg)) => {
                        tally[1] += 1;
                        *errors.entry(error_kind(stage, msg, &dir_path.display().to_string())).or_default() += 1;
                    }
                }
                if show {
                    eprintln!("{label}\n    -> {:?}", outcome.failed);
                }
                if !outcome.problems.is_empty() {
                    failures.push(format!("{label}\n    {}", outcome.problems.join("\n    ")));
                    dump.push(i);
                }
            }
            Ended::Panic { message, location, backtrace } => {
                tally[2] += 1;
                let entry = panics.entry(location.clone()).or_insert_with(|| {
                    let bt = backtrace.as_ref().map_or("(no backtrace)".into(), |b| b.to_string());
                    (message.clone(), vec![], format!("backtrace of {}:\n{bt}", case.id))
                });
                entry.1.push(format!("{label}\n      panicked: {message}"));
                dump.push(i);
            }
        }
    }
    let huge = std::mem::take(&mut *HUGE.lock().unwrap());
    let mut stuck_report = String::new();
    for (i, why) in &stuck {
        let (desc, bytes, _) = cases[*i].generate(&fixtures);
        stuck_report +=
            &format!("\n{} [{}] ({} bytes): {desc}\n    {why}", cases[*i].id, cases[*i].plan.kind(), bytes.len());
        for h in huge.iter().filter(|h| h.case == *i) {
            stuck_report += &format!(": {} bytes, from\n{}", h.size, h.backtrace);
        }
        dump.push(*i);
    }
    if let Some(dir) = std::env::var_os("FLINT_MUTATION_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let selected: Vec<usize> = if show { (0..cases.len()).collect() } else { dump.clone() };
        for i in selected {
            let (_, bytes, _) = cases[i].generate(&fixtures);
            std::fs::write(dir.join(format!("{}.gguf", cases[i].id.replace('#', "-"))), bytes).unwrap();
        }
    }

    let run = finished.iter().filter(|f| f.is_some()).count();
    let n_panics: usize = panics.values().map(|p| p.1.len()).sum();
    eprintln!(
        "gguf mutation: {run} of {} cases from {} fixtures ({}) in {:.1} s: {ok} loaded and generated, {} errors, \
         {n_panics} panics, {} stuck (hang or huge allocation), {} broken rules",
        cases.len(),
        fixtures.len(),
        fixtures.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "),
        elapsed.as_secs_f64(),
        errors.values().sum::<usize>(),
        stuck.len(),
        failures.len(),
    );
    eprintln!("by mutation (ok / error / panic):");
    for (kind, [o, e, p]) in &by_kind {
        eprintln!("  {kind:<18} {o:>5} {e:>5} {p:>3}");
    }
    let mut groups: Vec<(&String, &usize)> = errors.iter().collect();
    groups.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    eprintln!("errors by stage and first words ({} kinds):", groups.len());
    for (kind, n) in groups.iter().take(60) {
        eprintln!("  {n:>5}  {kind}");
    }
    if groups.len() > 60 {
        eprintln!("  ... and {} more kinds", groups.len() - 60);
    }

    let mut report = String::new();
    for (location, (message, labels, backtrace)) in &panics {
        report +=
            &format!("\n{} panics at {location}: {message}\n  {}\n{backtrace}", labels.len(), labels.join("\n  "));
    }
    if !stuck.is_empty() {
        report += &format!("\n{} cases did not finish:{stuck_report}", stuck.len());
        if stuck.iter().filter(|(_, why)| why.contains("hang")).count() >= MAX_HANGS {
            report += &format!("\nstopped after {MAX_HANGS} hangs; {} cases not run", cases.len() - run - stuck.len());
        }
    }
    if !failures.is_empty() {
        report += &format!("\n{} cases broke a rule:\n{}", failures.len(), failures.join("\n"));
    }
    assert!(report.is_empty(), "{report}");
    if only.is_none() {
        assert!(run >= MIN_CASES, "only {run} cases ran (at least {MIN_CASES} wanted)");
    }
}
