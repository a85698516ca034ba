;; Browser-test guest: logs markup on stderr and answers the same markup, which the console
;; must show as text (tests/browser/test_console.py, the XSS check).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "<img src=x onerror=\"window.__gustXss=1\"><script>window.__gustXss=2</script><b>bold?</b>\n")
  (func (export "_start")
    ;; iovec at 0 -> (512, 88)
    (i32.store (i32.const 0) (i32.const 512))
    (i32.store (i32.const 4) (i32.const 88))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
