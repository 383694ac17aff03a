//! Benchmarks: commands that run real servers and real clients and print figures side by side with a
//! baseline measured in the same run. They measure; they never assert on time.

pub mod fanout;
pub mod heal;
pub mod idle;
pub mod mesh;
pub mod soak;
