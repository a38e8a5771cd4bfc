import time, shutil
from huggingface_hub import constants as hfc
from tests.fakehub import serve_repos

def test_explore(make_ctx, tiny_folder, monkeypatch):
    monkeypatch.setattr(hfc, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    with serve_repos({"test-org/tiny-musicgen": tiny_folder}, delay=0.01) as hub:
        for i in range(3):
            ctx = make_ctx(hf_endpoint=hub.url)
            shutil.rmtree(ctx.settings.hf_cache_dir, ignore_errors=True)
            t = time.time()
            for e in ctx.manager.switch("tiny-hub"):
                print(round(time.time() - t, 3), e.stage, e.bytes_done, e.bytes_total, e.fraction, e.message)
