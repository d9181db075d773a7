//! Every map the program uses, as BTF-defined statics so `bpftool map dump` shows field names.
//!
//! The maps are declared once, in `portsentry_common::ps_maps!`; this file only turns each
//! declaration into a `#[btf_map]` static, so the name, key and value types and capacity here
//! are the ones userspace checks pins against. Capacities are the object's defaults; the loader
//! may resize the maps whose capacity is set by an option (the ban table and the ban trie).
//!
//! Why a table macro rather than statics that refer to constants: `#[btf_map]` exports the
//! static under its identifier (or a `name = "..."` string literal), and that symbol is the map
//! name the loader, the pin directory and `bpftool` see. A name cannot come from a `const`, so
//! the table carries the name as the identifier itself; userspace gets the same text with
//! `stringify!`. The result is byte for byte the object the hand-written statics produced.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};

/// One static per table line; the key of array kinds (`u32`) and of the ring buffer (`()`) is
/// implicit in the aya-ebpf type.
macro_rules! kernel_maps {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$key:ty, $value:ty> = $capacity:expr; )+) => {
        $( kernel_map!($(#[$doc])* $name $kind [$key] [$value] ($capacity)); )+
    };
}

macro_rules! kernel_map {
    ($(#[$doc:meta])* $name:ident Array [$k:ty] [$v:ty] ($cap:expr)) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: Array<$v, { $cap.object_entries() as usize }> = Array::new();
    };
    ($(#[$doc:meta])* $name:ident PerCpuArray [$k:ty] [$v:ty] ($cap:expr)) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: PerCpuArray<$v, { $cap.object_entries() as usize }> =
            PerCpuArray::new();
    };
    ($(#[$doc:meta])* $name:ident RingBuf [$k:ty] [$v:ty] ($cap:expr)) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: RingBuf<$v, { $cap.object_entries() as usize }> = RingBuf::new();
    };
    ($(#[$doc:meta])* $name:ident $kind:ident [$k:ty] [$v:ty] ($cap:expr)) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: $kind<$k, $v, { $cap.object_entries() as usize }> = $kind::new();
    };
}

portsentry_common::ps_maps!(kernel_maps);
