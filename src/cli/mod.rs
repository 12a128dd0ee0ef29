//! The binary's command-line definitions (clap), one file per mode that has
//! many flags. Only `main.rs` uses them; the library never parses argv.

pub mod proxy;
