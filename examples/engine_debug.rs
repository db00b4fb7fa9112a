use rkinfer::model::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(std::path::Path::new(&args[1]), &ModelOptions::default()).unwrap();
    let ids: Vec<u32> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let check: Vec<u32> = args[3].split(',').map(|s| s.parse().unwrap()).collect();
    let mut st = model
        .new_state(&StateOptions {
            n_ctx: 512,
            ..Default::default()
        })
        .unwrap();
    let t = std::time::Instant::now();
    let l = model
        .forward(&mut st, &ids, LogitsMode::Last)
        .unwrap()
        .to_vec();
    eprintln!("prompt {:?}", t.elapsed());
    for c in &check {
        print!("{}:{:.4} ", c, l[*c as usize]);
    }
    println!();
    // token by token
    let mut st2 = model
        .new_state(&StateOptions {
            n_ctx: 512,
            ..Default::default()
        })
        .unwrap();
    let mut l2 = vec![];
    for &i in &ids {
        l2 = model
            .forward(&mut st2, &[i], LogitsMode::Last)
            .unwrap()
            .to_vec();
    }
    for c in &check {
        print!("{}:{:.4} ", c, l2[*c as usize]);
    }
    println!();
}
