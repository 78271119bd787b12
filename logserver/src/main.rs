fn main() {
    println!("logserver: not yet implemented");
}
