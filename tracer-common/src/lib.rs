//! The event ABI shared by the BPF programs and the userspace tracer.
//!
//! Everything in [`abi`] is `#[repr(C)]` with explicit padding so both sides
//! agree byte for byte; [`funcs`] is the table of traced CUDA entry points.
//! Decoding (length and kind checks before any cast) lives behind the `user`
//! feature so the BPF side stays `no_std` and dependency free.
#![no_std]

pub mod abi;
pub mod funcs;

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
pub mod decode;
