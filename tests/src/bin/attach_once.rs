//! Attaches to the probe socket given as the argument and prints `welcome <pid>` or
//! `error: <message>`. Used to attach as another user.

fn main() {
    let path = std::env::args().nth(1).expect("socket path");
    let hello = stallscope_wire::proto::Hello::new("attach_once", "0");
    let result = std::os::unix::net::UnixStream::connect(&path)
        .map_err(stallscope_wire::Error::from)
        .and_then(|mut s| stallscope_wire::proto::client_handshake(&mut s, &hello));
    match result {
        Ok(w) => println!("welcome {}", w.process.pid),
        Err(e) => println!("error: {e}"),
    }
}
