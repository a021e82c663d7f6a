fn main() {
    println!("provisioning: under construction");
}
