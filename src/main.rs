//! The `dinggate` command line.
fn main() {}
