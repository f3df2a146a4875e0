# The tutorial's picture of the tape (docs/tutorial.md, "Seeing the tape"):
# docs/snippets/tutorial_graph.cpp prints the seed's model, tied three ways, as Graphviz DOT
# (format_graph(loss, GraphFormat::dot)).
# - ctest doc_tutorial_graph: the committed docs/images/tutorial_graph.dot is exactly what the
#   program prints now, so the committed picture cannot go stale unnoticed;
# - target `docs` (not part of the default build): rewrites docs/images/tutorial_graph.dot in the
#   source tree and, when Graphviz's `dot` is found (Debian package graphviz, in
#   scripts/install-deps.sh), renders docs/images/tutorial_graph.svg with `dot -Tsvg`. Commit both.
# The library itself needs no Graphviz.
add_executable(tutorial_graph ${PROJECT_SOURCE_DIR}/docs/snippets/tutorial_graph.cpp)
target_link_libraries(tutorial_graph PRIVATE hitch::hitch hitch_warnings)
add_test(NAME doc_tutorial_graph COMMAND tutorial_graph --check ${PROJECT_SOURCE_DIR}/docs/images/tutorial_graph.dot)

find_program(HITCH_DOT_EXECUTABLE dot)
set(HITCH_DOC_IMAGES ${PROJECT_SOURCE_DIR}/docs/images)
if(HITCH_DOT_EXECUTABLE)
  add_custom_target(docs
    COMMAND tutorial_graph --write ${HITCH_DOC_IMAGES}/tutorial_graph.dot
    COMMAND ${HITCH_DOT_EXECUTABLE} -Tsvg ${HITCH_DOC_IMAGES}/tutorial_graph.dot -o ${HITCH_DOC_IMAGES}/tutorial_graph.svg
    COMMENT "docs: writing docs/images/tutorial_graph.dot and rendering tutorial_graph.svg with ${HITCH_DOT_EXECUTABLE}"
    VERBATIM)
else()
  add_custom_target(docs
    COMMAND tutorial_graph --write ${HITCH_DOC_IMAGES}/tutorial_graph.dot
    COMMAND ${CMAKE_COMMAND} -E echo
            "docs: Graphviz's dot was not found (apt-get install graphviz): wrote tutorial_graph.dot, not the .svg"
    VERBATIM)
endif()
