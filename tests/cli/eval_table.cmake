# `flamingo eval` on the bundled model against a committed table, byte for byte:
#   cmake -DCLI=... -DMODEL=... -DDATA=... -DWEIGHTS=q8 -DLIMIT=N -DEXPECTED=table.md -DOUT=got.md -P eval_table.cmake
# One thread, so that the sums (and so every near-tie) come out the same on
# every run; the expected table comes from the PyTorch reference
# (tools/world/evaluate.py --weights ... --limit ... --cli-table).
execute_process(
  COMMAND ${CLI} eval --model ${MODEL} --data ${DATA} --weights ${WEIGHTS} --limit ${LIMIT} --threads 1 --out ${OUT}
  RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "flamingo eval failed (${status}): ${err}")
endif()
file(READ ${EXPECTED} want)
file(READ ${OUT} got)
if(NOT got STREQUAL want)
  message(FATAL_ERROR "flamingo eval --weights ${WEIGHTS} --limit ${LIMIT} differs from ${EXPECTED}\n"
                      "got:\n${got}\nexpected:\n${want}")
endif()
message(STATUS "flamingo eval --weights ${WEIGHTS} --limit ${LIMIT}: as ${EXPECTED}")
