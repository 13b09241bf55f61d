# `flamingo eval` on the bundled model against a committed table, byte for byte:
#   cmake -DCLI=... -DMODEL=... -DDATA=... -DWEIGHTS=q8 -DLIMIT=N -DEXPECTED=table.md -DOUT=got.md -P eval_table.cmake
# With -DSUPPORT=DIR -DSHOTS=random|rices the query records of DATA take their
# examples from the pool in DIR (read through a copy of its pool.jsonl next to
# OUT, so that the embedding cache is written there, not into the sources),
# and -DHELD_OUT=1 appends the held-out pairs' table.
# One thread, so that the sums (and so every near-tie) come out the same on
# every run; the expected table comes from the PyTorch reference
# (tools/world/evaluate.py --weights ... --limit ... --cli-table).
set(args eval --model ${MODEL} --data ${DATA} --threads 1 --out ${OUT})
if(DEFINED WEIGHTS)
  list(APPEND args --weights ${WEIGHTS})
endif()
if(DEFINED LIMIT)
  list(APPEND args --limit ${LIMIT})
endif()
if(DEFINED SUPPORT)
  get_filename_component(pool_copy ${OUT} DIRECTORY)
  set(pool_copy ${pool_copy}/support_${SHOTS})
  file(REMOVE_RECURSE ${pool_copy})
  file(MAKE_DIRECTORY ${pool_copy})
  file(COPY ${SUPPORT}/pool.jsonl DESTINATION ${pool_copy})
  file(CREATE_LINK ${SUPPORT}/images ${pool_copy}/images SYMBOLIC)
  list(APPEND args --support ${pool_copy} --shots ${SHOTS})
endif()
if(HELD_OUT)
  list(APPEND args --held-out)
endif()
execute_process(COMMAND ${CLI} ${args} RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "flamingo eval failed (${status}): ${err}")
endif()
file(READ ${EXPECTED} want)
file(READ ${OUT} got)
if(NOT got STREQUAL want)
  message(FATAL_ERROR "flamingo ${args} differs from ${EXPECTED}\n"
                      "got:\n${got}\nexpected:\n${want}")
endif()
message(STATUS "flamingo ${args}: as ${EXPECTED}")
