"""gcp-storage-emulator with the two download behaviours of GCS that TensorStore needs.

  python tests/gcs_emulator.py -d DIR start --host=127.0.0.1 --port=P --default-bucket=B

Same arguments as the `gcp-storage-emulator` command. gcp-storage-emulator 2026.7.19
serves an object's bytes without the `x-goog-generation` header and ignores
`ifGenerationNotMatch` / `ifGenerationMatch` on downloads. TensorStore's OCDBT driver
(Orbax's checkpoint format) re-reads its manifest conditionally after writing it;
without the header it fails with "Malformed StorageGeneration" (seen on the second
checkpoint save of a resumed run). Real GCS sends the header and honours the
conditions; this launcher adds both to the emulator's download handler, in this
process only (the installed package is not changed).
"""
import sys
from http import HTTPStatus

from gcp_storage_emulator import __main__ as emulator_main
from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  """The emulator's download, with GCS's generation header and conditions."""
  try:
    obj = storage.get_file_obj(request.params["bucket_name"],
                               request.params["object_id"])
  except NotFound:
    return _download(request, response, storage, *args, **kwargs)  # its 404
  generation = str(obj["generation"])
  response["x-goog-generation"] = generation
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
  not_match = request.query.get("ifGenerationNotMatch")
  if not_match and not_match[0] == generation:
    response.status = HTTPStatus.NOT_MODIFIED
    return None
  match = request.query.get("ifGenerationMatch")
  if match and match[0] != generation:
    response.status = HTTPStatus.PRECONDITION_FAILED
    return None
  return _download(request, response, storage, *args, **kwargs)


objects.download = download  # objects.get(alt=media) calls it through the module
for _, handlers in server.HANDLERS:
  for method, handler in list(handlers.items()):
    if handler is _download:
      handlers[method] = download

if __name__ == "__main__":
  sys.exit(emulator_main.main(sys.argv[1:]))
