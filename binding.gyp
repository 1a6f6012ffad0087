# vxedge's small native addon: plain C against Node-API (node_api.h) and libuv's uv.h,
# both from the Node headers node-gyp builds against. Linux only (TUN/TAP, recvmmsg).
# No architecture-specific flags: the same file builds natively and with Debian's
# cross compilers (CC=aarch64-linux-gnu-gcc / arm-linux-gnueabihf-gcc, --arch=arm64 / arm).
{
  "targets": [
    {
      "target_name": "vxedge_native",
      "sources": ["src/native/addon.c", "src/native/device.c", "src/native/socket.c", "src/native/poll.c", "src/native/csum.c", "src/native/tso.c", "src/native/sender.c", "src/native/gro.c", "src/native/pages.c", "src/native/clock.c", "src/native/netlink.c", "src/native/napi_util.c", "src/native/crypt.c"],
      # Node-API 8 (Node >= 12.22/14.17): async cleanup hooks and object type tags.
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-pthread"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["OS!='linux'", {"type": "none", "sources!": ["src/native/addon.c", "src/native/device.c", "src/native/socket.c", "src/native/poll.c", "src/native/csum.c", "src/native/tso.c", "src/native/sender.c", "src/native/gro.c", "src/native/pages.c", "src/native/clock.c", "src/native/netlink.c", "src/native/napi_util.c", "src/native/crypt.c"]}],
      ],
      "configurations": {
        # common.gypi asks -O3 for Release; -O2 is plenty here and keeps code size down.
        "Release": {"cflags!": ["-O3"], "cflags": ["-O2"]},
      },
    }
  ]
}
