fn main() {
    println!("proglog: not yet implemented");
}
