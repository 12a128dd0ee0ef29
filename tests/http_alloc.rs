//! The per-request head rewrites allocate nothing once the output buffer is
//! warm: counted by a global allocator wrapping the system one. (Only the
//! test's own thread is counted.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tidegate::http::{
    EMPTY_HEADER, ForwardOpts, IdGen, MAX_HEADERS, Method, parse_request, parse_response,
};

/// Counts allocations (and reallocations) made by threads that opted in.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's allocations count (the harness's own threads do not).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards every call unchanged to `System`, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `dealloc`, and `new_size` is the caller's valid size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn head_rewrites_do_not_allocate() {
    let request = b"POST /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nVia: 1.0 edge\r\n\
        X-Forwarded-For: 2001:db8::7\r\nX-Request-Id: abc\r\nContent-Length: 2\r\n\
        Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n";
    let response = b"HTTP/1.0 200 OK\r\nVia: 1.1 cache\r\nX-Request-Id: echoed\r\n\
        Connection: X-Secret\r\nX-Secret: s\r\nContent-Length: 2\r\n\r\n";
    let opts = ForwardOpts::default();
    let mut ids = IdGen::new(0x5eed, 1);
    let mut out = Vec::with_capacity(4096);
    let client = IpAddr::from([10, 0, 0, 1]);
    let (mut req_fields, mut resp_fields) =
        ([EMPTY_HEADER; MAX_HEADERS], [EMPTY_HEADER; MAX_HEADERS]);

    COUNTED.with(|c| c.set(true));
    let mut written = 0;
    for _ in 0..100 {
        out.clear();
        let Ok(Some(req)) = parse_request(request, &mut req_fields) else {
            panic!("request parses");
        };
        let id = req.write_head(client, true, &opts, &mut ids, &mut out);
        // A generated id too (the client's is kept above).
        let fresh = ids.next_id();
        let Ok(Some(resp)) = parse_response(response, Method::Post, false, &mut resp_fields) else {
            panic!("response parses");
        };
        resp.write_head(false, 1, &opts, &fresh, &mut out);
        written += out.len() + id.as_bytes().len();
    }
    COUNTED.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Relaxed);
    assert_eq!(allocations, 0, "{allocations} allocations in 100 rewrites");
    assert!(written > 100 * 300, "{written}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Via: 1.1 cache, 1.0 tidegate\r\n"), "{text}");
}
