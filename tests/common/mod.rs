#![allow(dead_code)]
pub mod mount;
pub mod tree;
