//! Caches between the filesystem core and the store.

pub mod admin;
pub mod blocks;
pub mod budget;
pub mod disk;
mod filler;
mod known;
pub mod meta;
pub mod objfile;
pub mod pages;
mod size;
