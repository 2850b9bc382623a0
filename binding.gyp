# CPU-only build with plain node-gyp, for platforms without a prebuilt binary
# (`npm install` runs node-gyp-build, which falls back to this). The CUDA backend is
# only built by CMakeLists.txt (cmake-js), which is what `npm run prebuild` uses.
# src/eval/ (FID, IS, precision/recall) includes the vendored header-only Eigen: third_party/eigen3.
{
  "targets": [
    {
      "target_name": "rargen_avx2",
      "type": "static_library",
      "sources": ["<!@(node -e \"console.log(require('fs').readdirSync('src/cpu').filter(f=>f.endsWith('_avx2.cc')).map(f=>'src/cpu/'+f).join(' '))\")"],
      "include_dirs": ["src"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx2", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "rargen",
      "dependencies": ["rargen_avx2"],
      "sources": ["<!@(node -e \"const fs=require('fs');const l=[];for(const d of ['src','src/cpu','src/model','src/eval','src/dist'])for(const f of (fs.existsSync(d)?fs.readdirSync(d):[]))if(f.endsWith('.cc')&&!f.endsWith('_avx2.cc'))l.push(d+'/'+f);console.log(l.join(' '))\")"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src", "third_party/eigen3"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
